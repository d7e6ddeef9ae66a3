"""Turning what ``Model.evaluate`` accepts into batches the check can read twice.

Keras's own data adapters do the work (arrays, dicts/lists of arrays, ``tf.data.Dataset``,
``torch.utils.data.DataLoader``, ``keras.utils.PyDataset``), so batches are cut exactly as
``evaluate`` would cut them, and handed over in the form ``fit`` uses on the backend Keras
runs on.  The
check reads the data twice (the recalibration probe needs the pooled statistics of the first
pass), so one-shot Python generators are refused, and infinite data needs ``steps``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from typing import Any

from pytest_bncheck import _keras, arguments, backends
from pytest_bncheck.errors import BNCheckInputError, BNCheckTypeError


_PARTS = ("x", "y", "sample_weight")
_DATASET_PARTS = ("the inputs", "the targets", "the sample weights")


class Batches:
    """Re-iterable batches of ``(x, y, sample_weight)`` as ``fit`` reads them on this backend."""

    def __init__(self, adapter: Any, steps: int | None, arrays: bool, batch_size: int | None):
        self.adapter = adapter
        self.steps = steps
        self.arrays = arrays  # x, y, sample_weight given as separate arrays (batches cut by us)
        self.batch_size = batch_size
        self._iterate = backends.current().iterate

    def describe(self, part: int, batch: int) -> str:
        """Which argument holds ``part`` (0 x, 1 y, 2 sample_weight) of batch ``batch``."""
        if self.arrays and self.batch_size:
            start = batch * self.batch_size
            return f"{_PARTS[part]} (batch index {batch}: samples {start}..{start + self.batch_size - 1})"
        return f"{_DATASET_PARTS[part]} of x's batch index {batch}"

    def __iter__(self) -> Iterator[Any]:
        self.adapter.on_epoch_begin()
        try:
            # Keras's adapters convert lazily (per batch on JAX and torch): data they cannot take
            # fails here.  Errors of the loop's body are not thrown into this generator.
            yield from self._iterate(self.adapter, self.steps)
        except (ValueError, TypeError, NotImplementedError) as exc:
            if isinstance(exc, BNCheckInputError):
                raise
            raise not_accepted(exc) from None
        finally:
            self.adapter.on_epoch_end()


def _first_dimension(structure: Any) -> int | None:
    tree = _keras.keras().tree
    for leaf in tree.flatten(structure):
        shape = getattr(leaf, "shape", None)
        if shape is not None and len(shape) > 0:
            return int(shape[0]) if shape[0] is not None else None
    return None


def data_kind(x: Any) -> str:
    """The kind of data: "tf.data", "torch", "pydataset" or "arrays" (anything else Keras's adapters take)."""
    if backends.is_tf_dataset(x):
        return "tf.data"
    if backends.is_torch_dataloader(x):
        return "torch"
    if isinstance(x, _keras.keras().utils.PyDataset):
        return "pydataset"
    return "arrays"


def make_batches(
    x: Any,
    y: Any = None,
    *,
    sample_weight: Any = None,
    batch_size: int | None = None,
    steps: int | None = None,
    class_weight: dict | None = None,
    length_known: bool = False,
    order_seed: int | None = None,
) -> Batches:
    """Validate ``x``/``y`` as ``evaluate`` would and return re-iterable batches.

    ``length_known``: the caller saw ``fit`` reach the end of this data (the audit), so a
    dataset of unknown cardinality is finite.  ``order_seed``: array data is permuted with
    this seed first (fit() shuffles arrays; batch statistics depend on which samples share a
    batch).
    """
    keras = _keras.keras()
    batch_size = arguments.positive_int("batch_size", batch_size)
    steps = arguments.positive_int("steps", steps)
    class_weight = arguments.class_weights(class_weight)
    if x is None:
        raise BNCheckInputError("no data: pass the training data as x (and y), as given to fit()")
    kind = data_kind(x)
    if inspect.isgenerator(x) or (isinstance(x, Iterator) and kind == "arrays"):
        raise BNCheckTypeError(
            f"x is a one-shot {type(x).__name__}: the check reads the data twice; "
            "pass arrays, a tf.data.Dataset, a torch DataLoader or a keras.utils.PyDataset instead"
        )
    if kind == "tf.data":
        tf = _keras.tf()
        cardinality = int(x.cardinality())
        if cardinality == tf.data.INFINITE_CARDINALITY and steps is None:
            raise BNCheckInputError(
                "x is an infinite tf.data.Dataset: pass steps= (the steps_per_epoch given to fit)"
            )
        if cardinality == tf.data.UNKNOWN_CARDINALITY and steps is None and not length_known:
            # from_generator, filter...: it may never end, and reading it to find out could hang.
            raise BNCheckInputError(
                "x is a tf.data.Dataset of unknown length (from_generator, filter...), which may be infinite: "
                "pass steps= (the steps_per_epoch given to fit), or declare its length with "
                "dataset.apply(tf.data.experimental.assert_cardinality(n))"
            )
    elif kind == "pydataset":
        if x.num_batches is None and steps is None:
            raise BNCheckInputError(
                "x is an infinite PyDataset (num_batches is None): pass steps= (the steps_per_epoch given to fit)"
            )
        if x.num_batches == 0:
            raise BNCheckInputError("x is an empty PyDataset: pass the data the model was trained on")
    elif kind == "arrays":
        size = _first_dimension(x)
        if size == 0:
            raise BNCheckInputError("x is empty (0 samples): pass the data the model was trained on")
    get_adapter = _keras.keras_src("trainers.data_adapters").get_data_adapter
    arrays = kind == "arrays"
    if arrays and order_seed is not None:
        np = _keras.np()
        size = _first_dimension(x)
        permutation = np.random.default_rng(order_seed).permutation(size)
        x, y, sample_weight = keras.tree.map_structure(
            lambda a: None if a is None else np.asarray(a)[permutation], (x, y, sample_weight)
        )
    try:
        adapter = get_adapter(
            x, y, sample_weight=sample_weight, batch_size=batch_size, steps_per_epoch=steps,
            shuffle=False, class_weight=class_weight,
        )
        if adapter.num_batches == 0:
            raise BNCheckInputError("the data has no batches: pass the data the model was trained on")
        if kind == "torch" and adapter.num_batches is None and steps is None and not length_known:
            raise BNCheckInputError(
                "x is a torch DataLoader of unknown length (an IterableDataset without __len__), which may be "
                "infinite: pass steps= (the steps_per_epoch given to fit)"
            )
        return Batches(adapter, steps, arrays, getattr(adapter, "batch_size", None) if arrays else None)
    except (ValueError, TypeError, NotImplementedError) as exc:
        if isinstance(exc, BNCheckInputError):
            raise
        raise not_accepted(exc) from None


def not_accepted(exc: BaseException) -> BNCheckInputError:
    message = " ".join(str(exc).split())
    return BNCheckInputError(f"x/y are not accepted as Model.evaluate would accept them: {message}")

def _specs(structure: Any) -> str:
    """``(None, 16) float32`` for every tensor in ``structure``, comma-separated."""
    keras = _keras.keras()
    tree = keras.tree
    leaves = [leaf for leaf in tree.flatten(structure) if leaf is not None] if structure is not None else []
    shown = []
    for leaf in leaves:
        shape = tuple(getattr(leaf, "shape", ()))
        dtype = getattr(leaf, "dtype", "?")
        try:
            dtype = keras.backend.standardize_dtype(dtype)  # "float32" for TF, JAX and torch dtypes
        except (ValueError, TypeError, AttributeError):
            dtype = getattr(dtype, "name", None) or str(dtype)
        shown.append(f"{tuple(None if d is None else int(d) for d in shape)} {dtype}")
    return ", ".join(shown) or "nothing"


_MISMATCH_KEYS = (
    "incompatible", "must have the same shape", "broadcastable", "label value", "expected", "dtype", "shape",
)


def _essence(exc: BaseException) -> str | None:
    """The line of a Keras/TensorFlow error that says what did not fit, or None when the error
    is not about the data's shape or type (then it is re-raised as it is: it is not ours to
    summarize)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # Keras highlights names with ANSI codes
    lines = [
        line.strip() for line in text.splitlines()
        if line.strip() and not line.strip().startswith(("File ", "in user code", "Traceback"))
    ]
    for key in _MISMATCH_KEYS:
        chosen = next((line for line in lines if key in line.lower()), None)
        if chosen:
            return chosen if len(chosen) <= 120 else chosen[:117] + "..."
    return None


def describe_mismatch(model: Any, data: Any, exc: BaseException) -> str | None:
    """One line for data the model cannot take: what the model expects, what the data is
    (None when ``exc`` is not about that)."""
    keras = _keras.keras()
    x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
    try:
        inputs, outputs = model.inputs, model.outputs  # functional and Sequential; subclassed have none
    except (AttributeError, ValueError):
        inputs = outputs = None
    expected = _specs(inputs) if inputs is not None else None
    tree = keras.tree
    if inputs is not None:
        ranks = [len(i.shape) for i in tree.flatten(inputs)]
        given = [len(getattr(leaf, "shape", ())) for leaf in tree.flatten(x)]
        if len(ranks) == len(given) and all(g == r - 1 for g, r in zip(given, ranks)):
            return (
                f"x yields single samples ({_specs(x)}) but model {model.name!r} takes batches ({expected}): "
                "batch the dataset (dataset.batch(32)) as for fit()"
            )
    essence = _essence(exc)
    if essence is None:
        return None
    takes = f"takes {expected} and outputs {_specs(outputs)}" if expected else "cannot take it"
    return (
        f"the data does not fit model {model.name!r}, which {takes}: x's batches are {_specs(x)}, "
        f"y's {_specs(y)} ({essence})"
    )
