"""BNConsistencyCallback for PyTorch Lightning: the check at the end of Trainer.fit."""

from __future__ import annotations

import pytest
import torch
import torch_models
from torch import nn

from pytest_bncheck import BNConsistencyError

pl = pytest.importorskip("lightning.pytorch")
from pytest_bncheck.pytorch.lightning import BNConsistencyCallback  # noqa: E402


class Classifier(pl.LightningModule):
    def __init__(self, momentum: float):
        super().__init__()
        self.net = torch_models.mlp(momentum=momentum)
        self.loss_fn = nn.CrossEntropyLoss()

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, index):
        x, y = batch
        loss = self.loss_fn(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)


def fit(callback, momentum: float, epochs: int):
    x, y = torch_models.blobs()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[callback],
    )
    model = Classifier(momentum)
    trainer.fit(model, loader)
    return model


def test_callback_reports_the_classic_failure_at_the_end_of_fit():
    printed = []
    callback = BNConsistencyCallback(nn.CrossEntropyLoss(), fit_metrics={"loss": "train_loss"}, print_fn=printed.append)
    fit(callback, momentum=0.01, epochs=3)
    report = callback.report
    assert report.cause == "batchnorm" and report.recalibration_closes_gap
    assert report.samples == 256 and report.batches == 8 and {layer.path for layer in report.layers} == {"net.1", "net.4"}
    assert printed == [str(report)]


def test_callback_raises_out_of_fit_and_passes_a_converged_model():
    with pytest.raises(BNConsistencyError):
        fit(BNConsistencyCallback(nn.CrossEntropyLoss(), raise_on_failure=True), momentum=0.01, epochs=3)
    callback = BNConsistencyCallback(nn.CrossEntropyLoss(), fit_metrics={"loss": "train_loss"}, raise_on_failure=True)
    fit(callback, momentum=0.1, epochs=20)
    assert callback.report.passed
