"""What differs between Keras's backends, and nothing else: the one backend-specific place.

The check is written once against Keras's backend-neutral API (``keras.ops``, a
``keras.StatelessScope`` with explicit variable values, Keras's data adapters).  Three things
cannot be: how a step is compiled, how Keras's data adapters hand batches to that backend,
and which exceptions a step raises on data the model cannot take.

* **tensorflow**: ``tf.function`` steps; they read the model's variables directly, which is
  what keeps ``tf.distribute`` strategies (per-replica variables) working.
* **jax**: ``jax.jit`` steps; a jitted function would bake the variables it reads into the
  compiled code as constants (stale after the next ``fit``), so every model variable's value
  is passed in explicitly and substituted through the scope, as ``model.stateless_call`` does.
* **torch**: eager steps (``torch.compile`` would cost more to compile than the check runs).

Nothing here imports TensorFlow unless Keras runs on it.
"""

from __future__ import annotations

import itertools
import sys
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable

from pytest_bncheck import _keras

SUPPORTED = ("tensorflow", "jax", "torch")


@dataclass(frozen=True)
class Backend:
    name: str
    compile: Callable[[Callable], Callable]
    #: Model variables are passed into each step as values (a jitted step must not read them).
    explicit_variables: bool
    #: Exceptions a step raises when the data does not fit the model.
    data_errors: tuple[type[BaseException], ...]
    #: Batches as ``fit`` iterates them on this backend, from a Keras data adapter.
    iterate: Callable[[Any, int | None], Any]
    #: A context that leaves the backend's global random state as it found it.
    rng_preserved: Callable[[], Any] = nullcontext


def _tensorflow() -> Backend:
    tf = _keras.tf()

    def iterate(adapter: Any, steps: int | None) -> Any:
        dataset = adapter.get_tf_dataset()
        return dataset.take(steps) if steps is not None else dataset

    return Backend(
        "tensorflow", lambda fn: tf.function(fn, reduce_retracing=True), False,
        (ValueError, TypeError, tf.errors.OpError), iterate,
    )


def _jax() -> Backend:
    import jax

    def iterate(adapter: Any, steps: int | None) -> Any:
        return itertools.islice(adapter.get_jax_iterator(), steps)

    errors = tuple(e for e in (getattr(jax.errors, "JaxRuntimeError", None),) if e is not None)
    return Backend("jax", jax.jit, True, (ValueError, TypeError, *errors), iterate)


def _torch() -> Backend:
    import torch

    def iterate(adapter: Any, steps: int | None) -> Any:
        return itertools.islice(adapter.get_torch_dataloader(), steps)

    @contextmanager
    def rng_preserved():
        # Keras's Dropout without a seed calls torch's dropout, which draws from torch's global
        # generator, and so does each DataLoader iterator: without this, the check would change
        # the next fit() (its dropout masks and shuffles).
        cpu = torch.random.get_rng_state()
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        try:
            yield
        finally:
            torch.random.set_rng_state(cpu)
            if cuda is not None:
                torch.cuda.set_rng_state_all(cuda)

    def compile(fn: Callable) -> Callable:
        def step(*args: Any) -> Any:
            with torch.no_grad():  # no autograd graph: the check never differentiates
                return fn(*args)

        return step

    # torch reports shape mismatches as RuntimeError (and out-of-range labels as IndexError).
    return Backend(
        "torch", compile, False, (ValueError, TypeError, RuntimeError, IndexError), iterate, rng_preserved
    )


_FACTORIES = {"tensorflow": _tensorflow, "jax": _jax, "torch": _torch}
_CURRENT: Backend | None = None


def current() -> Backend:
    """The backend Keras runs on (Keras fixes it at import, so it is looked up once)."""
    global _CURRENT
    name = _keras.keras().config.backend()
    if _CURRENT is None or _CURRENT.name != name:
        factory = _FACTORIES.get(name)
        if factory is None:
            from pytest_bncheck.errors import BNCheckInputError

            raise BNCheckInputError(
                f"the runtime check supports Keras's {', '.join(SUPPORTED)} backends, and Keras runs on {name!r}: "
                "select one with KERAS_BACKEND=tensorflow (or jax, torch)"
            )
        _CURRENT = factory()
    return _CURRENT


def is_tf_dataset(x: Any) -> bool:
    """A ``tf.data.Dataset`` (without importing TensorFlow: a dataset means it is imported)."""
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(x, tf.data.Dataset)


def is_torch_dataloader(x: Any) -> bool:
    torch_data = sys.modules.get("torch.utils.data")
    return torch_data is not None and isinstance(x, torch_data.DataLoader)


def to_numpy(value: Any) -> Any:
    """A step's output as a NumPy array (``.numpy()`` on TensorFlow: Keras's conversion warns there)."""
    if _keras.keras().config.backend() == "tensorflow" and hasattr(value, "numpy"):
        return value.numpy()
    return _keras.keras().ops.convert_to_numpy(value)
