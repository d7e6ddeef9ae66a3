"""BNConsistencyCallback: the audit for scripts, and the update counter it shares with the plugin."""

from __future__ import annotations

import subprocess
import sys

import bn_models
import pytest

from pytest_bncheck import BNConsistencyCallback, BNConsistencyError


def test_callback_prints_the_report_and_counts_updates_over_fits():
    x, y = bn_models.blobs()
    model = bn_models.bn_mlp()
    printed = []
    callback = BNConsistencyCallback(x, y, batch_size=32, print_fn=printed.append)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[callback])
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[callback])
    assert callback.report is not None and callback.report.cause == "batchnorm"
    assert len(printed) == 2 and printed[-1] == str(callback.report)
    layer = callback.report.layers[0]
    assert layer.updates_source == "counted" and layer.updates == 9  # 2 + 1 epochs of 3 steps
    assert "counted over the fit() calls" in printed[-1]


def test_callback_can_raise_out_of_fit():
    x, y = bn_models.blobs()
    model = bn_models.bn_mlp()
    with pytest.raises(BNConsistencyError) as raised:
        model.fit(x, y, batch_size=32, epochs=3, verbose=0,
                  callbacks=[BNConsistencyCallback(x, y, batch_size=32, raise_on_failure=True)])
    assert raised.value.report.cause == "batchnorm"


def test_callback_is_silent_for_a_consistent_model():
    x, y = bn_models.blobs()
    model = bn_models.bn_mlp(momentum=0.9)
    printed = []
    callback = BNConsistencyCallback(x, y, batch_size=32, print_fn=printed.append)
    model.fit(x, y, batch_size=32, epochs=60, verbose=0, callbacks=[callback])
    assert callback.report.passed and printed == []


def test_importing_the_package_and_plugin_does_not_import_tensorflow():
    code = (
        "import pytest_bncheck, pytest_bncheck.plugin, sys; "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules and 'numpy' not in sys.modules; "
        "assert 'lint' not in sys.modules; "
        "assert callable(pytest_bncheck.__getattr__)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_callback_catches_keras_20285_even_when_the_metrics_agree():
    model, x, y = bn_models.fine_tuning()
    callback = BNConsistencyCallback(x, y, batch_size=32, print_fn=lambda text: None)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[callback])
    report = callback.report
    assert all(c.inference_agrees for c in report.comparisons)  # the metrics alone would pass
    assert not report.passed and report.cause == "keras#20285"
    (change,) = report.statistics_changed
    assert change.reason == "training=False" and change.container == "base" and change.path.startswith("base/")
    assert report.advice[0].startswith(
        "the moving statistics of 1 BatchNormalization layers in 'base' changed during fit() although it was "
        "called with training=False (Keras 3.0-3.15, keras-team/keras#20285"
    )
    assert "set trainable = False on each BatchNormalization layer of 'base'" in str(report)


def test_callback_is_silent_when_batchnorm_is_kept_frozen_while_fine_tuning():
    model, x, y = bn_models.fine_tuning(keep_batchnorm_frozen=True)
    callback = BNConsistencyCallback(x, y, batch_size=32, print_fn=lambda text: None)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[callback])
    assert callback.report.passed and callback.report.statistics_changed == []


def test_callback_catches_frozen_statistics_written_during_fit():
    import keras

    x, y = bn_models.blobs()
    model = bn_models.bn_mlp(momentum=0.9)
    model.fit(x, y, batch_size=32, epochs=40, verbose=0)
    frozen = model.layers[1]
    frozen.trainable = False
    model.compile(optimizer=keras.optimizers.Adam(0.001), loss="categorical_crossentropy", metrics=["acc"])

    class Meddler(keras.callbacks.Callback):  # writes a frozen layer's statistics, as a buggy callback would
        def on_epoch_end(self, epoch, logs=None):
            frozen.moving_mean.assign(frozen.moving_mean + 1e-3)

    callback = BNConsistencyCallback(x, y, batch_size=32, print_fn=lambda text: None)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[Meddler(), callback])
    report = callback.report
    assert not report.passed and report.cause == "frozen-updated"
    (change,) = report.statistics_changed
    assert change.reason == "trainable=False" and change.path == frozen.name and change.container is None
    assert "BatchNormalization layers with trainable=False changed during fit()" in report.advice[0]
