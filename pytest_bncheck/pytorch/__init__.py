"""The PyTorch backend of the runtime check: ``torch.nn.Module`` models.

:mod:`pytest_bncheck.api` dispatches here when the model is a ``torch.nn.Module``; nothing in
this package imports torch at import time except through :mod:`._torch`, called when a check
runs.  One concept per module:

* :mod:`.modules`: unwrapping (DataParallel, DistributedDataParallel, ``torch.compile``),
  finding every ``_BatchNorm``, the mode each module has in the training-mode view;
* :mod:`.state`: leaving the model bit-identical (training flags, RNG state);
* :mod:`.data`: the batches (a DataLoader, any re-iterable, or tensors with ``batch_size``);
* :mod:`.passes`: the forward passes and the per-layer input moments;
* :mod:`.distributed`: pooling moments and metrics across the ranks of a process group;
* :mod:`.diagnosis`: per-layer diagnosis and the fixes that apply;
* :mod:`.report`: the report's text for a torch model;
* :mod:`.check` and :mod:`.recalibrate`: the two public functions.
"""
