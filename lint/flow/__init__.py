"""The analysis core: one flow-sensitive walk per file that every rule queries.

- ``values``: abstract values (modules and models with has-BatchNorm yes/no/maybe, modes as
  sets of possibilities, tensors real or random, loaders with batch size and ``drop_last``,
  constants) and how they join where paths meet;
- ``constants``: constant folding, so code that cannot run (``if False:``, an unoverridden
  falsy default, the "val" iteration of ``for phase in ["train", "val"]``) is not analysed;
- ``events``: what the walk records (freezes, mode changes, forwards with their context and
  data, loaders feeding models) for the rules to query;
- ``project``: the project index (imports resolved between the files of a run, per-module
  summaries shared with the worker processes);
- ``walk``: the walk over one file with PyTorch's semantics (from ``lint.frameworks.torch``);
- ``layers``: its Keras-layer part (layer values, ``training`` arguments and defaults, Dropout
  feeding BatchNormalization, the learning-phase API, ``fit()`` batch sizes);
- ``keras_models``: its Keras-model part (models frozen, unfrozen, re-frozen, called, placed in a
  ``Sequential``, their graph reused: what BN001-BN003 query);
- ``keras_steps``: custom Keras training steps and the model calls inside them (BN008).
"""
