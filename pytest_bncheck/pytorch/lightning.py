"""``BNConsistencyCallback`` for PyTorch Lightning: the check when ``Trainer.fit`` ends.

Imports Lightning when imported (it subclasses ``lightning.pytorch.Callback``), so nothing
imports this module unless you do::

    from pytest_bncheck.pytorch.lightning import BNConsistencyCallback

    trainer = Trainer(max_epochs=5, callbacks=[
        BNConsistencyCallback(loss_fn=nn.CrossEntropyLoss(), fit_metrics={"loss": "train_loss"}),
    ])

The data is the trainer's training dataloader unless ``data`` is given.  ``fit_metrics`` maps
the check's names to the keys the module logged (``self.log("train_loss", loss,
on_epoch=True)``; the epoch means in ``trainer.callback_metrics``) or to numbers; without it
inference is compared with BN-only train mode.  Under a distributed strategy every rank runs
the callback and gets the same report (:mod:`.distributed`).
"""

from __future__ import annotations

import importlib
from typing import Any

from pytest_bncheck.errors import BNCheckInputError
from pytest_bncheck.report import BNConsistencyError


def _callback_base() -> type:
    try:
        return importlib.import_module("lightning.pytorch").Callback
    except ImportError:
        try:
            return importlib.import_module("pytorch_lightning").Callback
        except ImportError as exc:
            raise ImportError(
                f"BNConsistencyCallback needs Lightning ({exc}): pip install lightning"
            ) from None


class BNConsistencyCallback(_callback_base()):
    """Runs :func:`~pytest_bncheck.pytorch.check.check_bn_consistency` at the end of ``fit``;
    prints the report when it fails, or raises :class:`BNConsistencyError` out of ``fit`` with
    ``raise_on_failure=True``.  The report is kept in ``.report``."""

    def __init__(
        self,
        loss_fn: Any = None,
        *,
        metrics: Any = None,
        fit_metrics: dict[str, Any] | None = None,
        data: Any = None,
        batch_size: int | None = None,
        atol: float | None = None,
        rtol: float | None = None,
        raise_on_failure: bool = False,
        print_fn: Any = print,
    ):
        super().__init__()
        self.loss_fn, self.metrics, self.fit_metrics = loss_fn, metrics, fit_metrics
        self.data, self.batch_size = data, batch_size
        self.atol, self.rtol = atol, rtol
        self.raise_on_failure, self.print_fn = raise_on_failure, print_fn
        self.report = None

    def _fit_numbers(self, trainer: Any) -> dict[str, float] | None:
        if self.fit_metrics is None:
            return None
        logged = trainer.callback_metrics
        numbers = {}
        for name, source in self.fit_metrics.items():
            if isinstance(source, str):
                if source not in logged:
                    raise BNCheckInputError(
                        f"fit_metrics[{name!r}] names {source!r}, which the module did not log "
                        f"(logged: {', '.join(sorted(logged)) or 'nothing'}): log it with self.log(..., on_epoch=True)"
                    )
                numbers[name] = float(logged[source])
            else:
                numbers[name] = float(source)
        return numbers

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        from pytest_bncheck.pytorch.check import check_bn_consistency

        data = self.data if self.data is not None else trainer.train_dataloader
        self.report = check_bn_consistency(
            pl_module, data, loss_fn=self.loss_fn, metrics=self.metrics, fit_metrics=self._fit_numbers(trainer),
            batch_size=self.batch_size, atol=self.atol, rtol=self.rtol, raise_on_failure=False,
        )
        if self.report.passed:
            return
        if self.raise_on_failure:
            raise BNConsistencyError(self.report)
        self.print_fn(str(self.report))
