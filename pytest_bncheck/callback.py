"""``BNConsistencyCallback``: the ``--bn-consistency`` audit for scripts and notebooks.

Imports Keras when imported (it subclasses ``keras.callbacks.Callback``), so the package
exposes it lazily.
"""

from __future__ import annotations

from typing import Any

from pytest_bncheck import _keras, arguments, audit
from pytest_bncheck.consistency import run_check
from pytest_bncheck.errors import BNCheckTypeError
from pytest_bncheck.report import BNConsistencyError

_keras_module = _keras.keras()


class BNConsistencyCallback(_keras_module.callbacks.Callback):
    """Checks BatchNormalization consistency when ``fit`` ends; prints or raises the report.

    ``fit`` does not tell callbacks its data, so give the callback the same ``x``/``y`` (and
    ``batch_size``, ``steps``, ``sample_weight``, ``class_weight``) as ``fit``::

        model.fit(x, y, batch_size=16, epochs=5,
                  callbacks=[BNConsistencyCallback(x, y, batch_size=16)])

    The report is kept in ``.report``.  With ``raise_on_failure=True`` a failing check raises
    :class:`BNConsistencyError` out of ``fit``; otherwise the report is printed with
    ``print_fn`` (default ``print``).  Moving-average updates are counted over the fits the
    callback sees, as the pytest audit does.
    """

    def __init__(
        self,
        x: Any,
        y: Any = None,
        *,
        batch_size: int | None = None,
        steps: int | None = None,
        sample_weight: Any = None,
        class_weight: dict | None = None,
        atol: float | None = None,
        rtol: float | None = None,
        raise_on_failure: bool = False,
        print_fn: Any = print,
    ):
        super().__init__()
        arguments.positive_int("batch_size", batch_size)
        arguments.positive_int("steps", steps)
        arguments.class_weights(class_weight)
        arguments.tolerance("atol", atol)
        arguments.tolerance("rtol", rtol)
        arguments.flag("raise_on_failure", raise_on_failure)
        if not callable(print_fn):
            raise BNCheckTypeError(f"print_fn must be callable (print, logging.info...), got {print_fn!r}")
        self._data = {
            "x": x, "y": y, "batch_size": batch_size, "steps": steps,
            "sample_weight": sample_weight, "class_weight": class_weight,
        }
        self._tolerance = {"atol": atol, "rtol": rtol}
        self.raise_on_failure = raise_on_failure
        self.print_fn = print_fn
        self.report = None
        self._before: Any = None

    def on_train_begin(self, logs: Any = None) -> None:
        self._before = audit.before_fit(self.model)

    def on_train_end(self, logs: Any = None) -> None:
        if self._before is not None:
            audit.after_fit(self.model, self._before)
        history = getattr(self.model, "history", None)
        if not getattr(history, "history", None):
            return
        self.report = run_check(
            self.model, history=history, tolerance=self._tolerance,
            update_counts=audit.counted_updates(self.model),
            statistics_changed=self._before.changes if self._before is not None else None, **self._data,
        )
        if self.report.passed:
            return
        if self.raise_on_failure:
            raise BNConsistencyError(self.report)
        self.print_fn(str(self.report))
