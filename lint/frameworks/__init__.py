"""Framework knowledge (Keras, PyTorch): names, constructors and calls, one module per framework."""
