"""check_bn_consistency on small real models: verdicts, causes, diagnosis, data forms."""

from __future__ import annotations

import math

import bn_models
import numpy as np
import pytest

import keras
import tensorflow as tf
from pytest_bncheck import (
    BNConsistencyError,
    BNConsistencyReport,
    check_bn_consistency,
    recalibrate_batchnorm,
)


@pytest.fixture(scope="module")
def undertrained():
    return bn_models.undertrained()


def snapshot(model):
    variables = model.variables + model.optimizer.variables + model.metrics_variables
    return {id(v): (v.path, np.array(keras.ops.convert_to_numpy(v.value), copy=True)) for v in variables}


def assert_identical(model, before):
    after = snapshot(model)
    assert after.keys() == before.keys()
    changed = [before[k][0] for k in before if not np.array_equal(before[k][1], after[k][1])]
    assert not changed, f"the check changed {changed}"


def test_undertrained_model_fails_with_cause_batchnorm(undertrained):
    model, x, y, history = undertrained
    with pytest.raises(BNConsistencyError) as raised:
        check_bn_consistency(model, x, y, batch_size=32)
    report = raised.value.report
    assert isinstance(raised.value, AssertionError)
    assert not report.passed and report.cause == "batchnorm"
    assert report.fit_metrics["acc"] == history.history["acc"][-1] == 1.0
    assert report.train_mode_metrics["acc"] == 1.0
    assert report.inference_metrics["acc"] < 0.7  # at chance (1/3) or near it, as the backend trained it
    assert report.recalibration_closes_gap is True
    assert report.recalibrated_metrics["acc"] == 1.0


def test_inference_metrics_are_what_evaluate_reports(undertrained):
    model, x, y, _ = undertrained
    report = check_bn_consistency(model, x, y, batch_size=32, raise_on_failure=False)
    evaluated = model.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    assert report.inference_metrics == pytest.approx(evaluated, rel=1e-5)


def test_layers_are_diagnosed_and_ranked(undertrained):
    model, x, y, _ = undertrained
    report = check_bn_consistency(model, x, y, batch_size=32, raise_on_failure=False)
    assert len(report.layers) == 2
    errors = [layer.output_error for layer in report.layers]
    assert errors == sorted(errors, reverse=True) and errors[0] > 1.0
    first = report.layers[0]
    # Input of the first BatchNormalization: Dense(32) of data centred around 5, far from mean 0.
    assert first.path.endswith(model.layers[1].name)
    assert first.mean_shift_max > 2.0 and not first.frozen and first.momentum == pytest.approx(0.99)
    steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    assert first.updates == steps == 9 and first.updates_source == "estimated"
    assert first.initial_share == pytest.approx(0.99**9)


def test_report_text_shows_metrics_side_by_side_layers_and_fix(undertrained):
    model, x, y, _ = undertrained
    text = str(check_bn_consistency(model, x, y, batch_size=32, raise_on_failure=False))
    lines = text.splitlines()
    assert lines[0] == "BatchNormalization consistency check FAILED (cause: batchnorm)"
    header = next(line for line in lines if line.strip().startswith("metric"))
    assert header.split() == ["metric", "fit", "(last", "epoch)", "train", "mode", "inference", "recalibrated"]
    assert any(line.split()[0] == "acc" and "FAIL" in line for line in lines if line.strip())
    assert "recalibrate_batchnorm(model, x, batch_size=32)" in text
    assert "459 updates" in text  # 0.99 ** 459 < 1%
    assert "optimizer.iterations" in text  # the estimate's assumptions are stated


def test_check_leaves_every_variable_bit_identical():
    x, y = bn_models.blobs()
    model = bn_models.bn_mlp(dropout=0.3)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0)
    before = snapshot(model)
    for _ in range(2):  # cold (tracing) and warm (cached steps)
        check_bn_consistency(model, x, y, batch_size=32, raise_on_failure=False)
        assert_identical(model, before)
    assert not [layer for layer in model.layers if "call" in vars(layer)]


def test_training_continues_as_if_nothing_happened():
    def train(check: bool):
        x, y = bn_models.blobs()
        model = bn_models.bn_mlp(dropout=0.3)
        model.fit(x, y, batch_size=32, epochs=2, verbose=0)
        if check:
            check_bn_consistency(model, x, y, batch_size=32, raise_on_failure=False)
        model.fit(x, y, batch_size=32, epochs=1, verbose=0)
        return [keras.ops.convert_to_numpy(v.value) for v in model.variables + model.optimizer.variables]

    assert all(np.array_equal(a, b) for a, b in zip(train(False), train(True), strict=True))


def test_well_trained_batchnorm_model_passes():
    model, x, y, _ = bn_models.well_trained()
    report = check_bn_consistency(model, x, y, batch_size=32)
    assert report.passed and report.cause is None
    assert all(layer.output_error < 0.2 for layer in report.layers)
    assert not report.advice


def test_dropout_model_with_better_inference_passes():
    keras.utils.set_random_seed(2)
    x, y = bn_models.blobs(offset=0.0)
    model = keras.Sequential([
        keras.Input((16,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dropout(0.7),
        keras.layers.Dense(3, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["acc"])
    model.fit(x, y, batch_size=32, epochs=3, verbose=0)
    report = check_bn_consistency(model, x, y, batch_size=32)
    loss = next(c for c in report.comparisons if c.name == "loss")
    # Dropout off at inference: clearly better than fit-time, by more than the tolerance.
    assert loss.inference < loss.fit - loss.allowed and loss.inference_agrees
    assert report.passed and report.layers == []
    assert "no BatchNormalization layer" in str(report)


def test_batchnorm_and_dropout_model_with_better_inference_passes():
    x, y = bn_models.blobs()
    model = bn_models.bn_mlp(momentum=0.9, dropout=0.7)
    model.fit(x, y, batch_size=32, epochs=40, verbose=0)
    report = check_bn_consistency(model, x, y, batch_size=32)
    loss = next(c for c in report.comparisons if c.name == "loss")
    assert loss.inference < loss.fit and report.passed


def test_frozen_base_passes_and_notes_its_statistics():
    x, y = bn_models.blobs()
    keras.utils.set_random_seed(3)
    base = keras.Sequential(
        [keras.Input((16,)), keras.layers.Dense(32), keras.layers.BatchNormalization(), keras.layers.ReLU()],
        name="base",
    )
    bn = base.layers[1]
    bn.moving_mean.assign(np.full(32, 3.0, "float32"))  # "pretrained" on other data
    bn.moving_variance.assign(np.full(32, 0.5, "float32"))
    base.trainable = False
    model = keras.Sequential([keras.Input((16,)), base, keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="categorical_crossentropy", metrics=["acc"])
    model.fit(x, y, batch_size=32, epochs=5, verbose=0)
    report = check_bn_consistency(model, x, y, batch_size=32)
    assert report.passed
    (layer,) = report.layers
    assert layer.frozen and layer.nested and layer.path == f"base/{bn.name}"
    assert layer.updates_source == "frozen" and layer.output_error > 1.0
    assert "frozen layers' stored statistics differ from this data" in str(report)


def test_unfrozen_base_in_fine_tuning_gets_keep_frozen_advice():
    x, y = bn_models.blobs()
    keras.utils.set_random_seed(4)
    base = keras.Sequential(
        [
            keras.Input((16,)),
            keras.layers.Dense(32, use_bias=False), keras.layers.BatchNormalization(), keras.layers.ReLU(),
            keras.layers.Dense(16, use_bias=False), keras.layers.BatchNormalization(), keras.layers.ReLU(),
        ],
        name="base",
    )
    inputs = keras.Input((16,))
    outputs = keras.layers.Dense(3, activation="softmax")(base(inputs, training=False))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="categorical_crossentropy", metrics=["acc"])
    model.fit(x, y, batch_size=32, epochs=3, verbose=0)  # keras#20285: base's BN trains anyway
    assert not np.all(base.layers[1].moving_mean.numpy() == 0.0)
    report = check_bn_consistency(model, x, y, batch_size=32, raise_on_failure=False)
    assert report.cause == "batchnorm"
    assert all(layer.nested and layer.path.startswith("base/") for layer in report.layers)
    assert any("2 BatchNormalization layers inside the sub-model 'base' are trainable" in a for a in report.advice)


def test_gap_shared_by_training_mode_is_not_batchnorm():
    model, x, y, _ = bn_models.well_trained()
    wrong = np.roll(y, 1, axis=0)  # not the labels fit saw: both modes are bad
    report = check_bn_consistency(model, x, wrong, batch_size=32, raise_on_failure=False)
    assert not report.passed and report.cause == "other"
    assert "does not explain it" in report.advice[0]


def test_recalibration_sets_exact_population_statistics_and_fixes_the_model():
    model, x, y, _ = bn_models.undertrained()
    first = model.layers[1]
    summary = recalibrate_batchnorm(model, x, batch_size=32)
    assert [r.path for r in summary.recalibrated] == [model.layers[1].name, model.layers[4].name]
    assert summary.samples == 96 and summary.batches == 3
    # The first BatchNormalization's input does not depend on batch statistics: compare exactly.
    inputs = keras.ops.convert_to_numpy(model.layers[0](x)).astype(np.float64)
    np.testing.assert_allclose(first.moving_mean.numpy(), inputs.mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(first.moving_variance.numpy(), inputs.var(axis=0), rtol=1e-4, atol=1e-5)
    assert check_bn_consistency(model, x, y, batch_size=32).passed


def test_recalibration_leaves_frozen_layers_and_everything_else_alone():
    model, x, y, _ = bn_models.undertrained()
    model.layers[4].trainable = False
    before = snapshot(model)
    summary = recalibrate_batchnorm(model, x, batch_size=32)
    assert summary.skipped_frozen == [model.layers[4].name]
    after = snapshot(model)
    changed = {before[k][0] for k in before if not np.array_equal(before[k][1], after[k][1])}
    first = model.layers[1]
    assert changed == {first.moving_mean.path, first.moving_variance.path}


def test_multi_input_multi_output_dicts():
    keras.utils.set_random_seed(5)
    x, y = bn_models.blobs()
    a, b = keras.Input((8,), name="a"), keras.Input((8,), name="b")
    h = keras.layers.ReLU()(keras.layers.BatchNormalization()(keras.layers.Dense(16)(keras.layers.Concatenate()([a, b]))))
    cls = keras.layers.Dense(3, activation="softmax", name="cls")(h)
    reg = keras.layers.Dense(1, name="reg")(h)
    model = keras.Model({"a": a, "b": b}, {"cls": cls, "reg": reg})
    model.compile(
        optimizer=keras.optimizers.Adam(0.01), loss={"cls": "categorical_crossentropy", "reg": "mse"},
        metrics={"cls": ["acc"]},
    )
    inputs = {"a": x[:, :8], "b": x[:, 8:]}
    targets = {"cls": y, "reg": x[:, :1]}
    history = model.fit(inputs, targets, batch_size=32, epochs=3, verbose=0)
    report = check_bn_consistency(model, inputs, targets, batch_size=32, raise_on_failure=False)
    assert set(report.fit_metrics) == set(history.history)
    evaluated = model.evaluate(inputs, targets, batch_size=32, verbose=0, return_dict=True)
    assert report.inference_metrics == pytest.approx(evaluated, rel=1e-5)
    assert report.cause == "batchnorm"


class Blobs(keras.utils.PyDataset):
    def __init__(self, x, y, batch_size):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index):
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.x[part], self.y[part]


def test_datasets_and_pydatasets_give_the_same_verdict_as_arrays(undertrained):
    model, x, y, _ = undertrained
    arrays = check_bn_consistency(model, x, y, batch_size=32, raise_on_failure=False)
    finite = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    infinite = finite.repeat()
    reports = [
        check_bn_consistency(model, finite, raise_on_failure=False),
        check_bn_consistency(model, infinite, steps=3, raise_on_failure=False),
        check_bn_consistency(model, Blobs(x, y, 32), raise_on_failure=False),
    ]
    for report in reports:
        assert isinstance(report, BNConsistencyReport) and report.cause == "batchnorm"
        assert report.samples == 96
        assert report.inference_metrics == pytest.approx(arrays.inference_metrics, rel=1e-5)
        assert report.train_mode_metrics == pytest.approx(arrays.train_mode_metrics, rel=1e-5)


def test_class_weight_is_applied_as_in_fit():
    x, y = bn_models.blobs()
    model = bn_models.bn_mlp(momentum=0.9)
    weights = {0: 1.0, 1: 5.0, 2: 0.5}
    model.fit(x, y, batch_size=32, epochs=30, class_weight=weights, verbose=0)
    plain = check_bn_consistency(model, x, y, batch_size=32, raise_on_failure=False)
    weighted = check_bn_consistency(model, x, y, batch_size=32, class_weight=weights, raise_on_failure=False)
    evaluated = model.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    assert plain.inference_metrics["loss"] == pytest.approx(evaluated["loss"], rel=1e-5)
    assert weighted.inference_metrics["loss"] != pytest.approx(plain.inference_metrics["loss"], rel=1e-3)


def hit_rate(y_true, y_pred):  # a custom metric: its direction is unknown to the check
    return keras.ops.cast(keras.ops.argmax(y_true, -1) == keras.ops.argmax(y_pred, -1), "float32")


@pytest.fixture(scope="module")
def heavy_dropout():
    """Converged BatchNormalization, Dropout(0.9): fit's metrics (dropout on) are far below
    inference's, on a custom metric and on MeanIoU (history key 'mean_io_u')."""
    x, y = bn_models.blobs()
    model = bn_models.bn_mlp(momentum=0.9, dropout=0.9)
    iou = keras.metrics.MeanIoU(num_classes=3, sparse_y_true=False, sparse_y_pred=False)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="categorical_crossentropy", metrics=[hit_rate, iou])
    model.fit(x, y, batch_size=32, epochs=20, verbose=0)
    return model, x, y


def test_dropout_gap_is_not_blamed_on_batchnorm(heavy_dropout):
    model, x, y = heavy_dropout
    report = check_bn_consistency(model, x, y, batch_size=32)
    hit = next(c for c in report.comparisons if c.name == "hit_rate")
    assert hit.direction is None and hit.inference > hit.fit + hit.allowed  # a two-sided gap...
    assert hit.bn_only == pytest.approx(hit.inference, abs=0.05)  # ...that BatchNormalization alone does not open
    assert hit.explained_by_training_layers and report.passed and report.cause is None
    text = str(report)
    assert "BN-only train" in text and "not BatchNormalization" in text


def test_metric_directions_come_from_the_metric_objects(heavy_dropout):
    model, x, y = heavy_dropout
    report = check_bn_consistency(model, x, y, batch_size=32)
    iou = next(c for c in report.comparisons if c.name == "mean_io_u")
    assert iou.direction == "higher" and iou.inference_agrees  # better than fit: agrees
    from pytest_bncheck.metrics import direction_of

    assert direction_of(keras.metrics.RootMeanSquaredError(), keras.metrics) == "lower"
    assert direction_of(keras.metrics.MeanMetricWrapper(hit_rate, name="m"), keras.metrics) is None


def test_batchnorm_gap_under_heavy_dropout_is_still_batchnorm():
    x, y = bn_models.blobs()
    model = bn_models.bn_mlp(momentum=0.999, dropout=0.5)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="categorical_crossentropy", metrics=[hit_rate])
    model.fit(x, y, batch_size=32, epochs=3, verbose=0)  # unconverged statistics (99% initial)
    report = check_bn_consistency(model, x, y, batch_size=32, raise_on_failure=False)
    hit = next(c for c in report.comparisons if c.name == "hit_rate")
    if keras.config.backend() != "tensorflow" and hit.inference_agrees:
        pytest.skip("this backend's training left no inference gap to attribute (premise not met)")
    assert hit.bn_only is not None and not hit.explained_by_training_layers
    assert report.cause == "batchnorm"


def pretrained_then_unfrozen(callbacks=()):
    """A base whose BatchNormalization statistics were loaded (set_weights), frozen for the
    head, then unfrozen and fine-tuned for 15 steps at momentum 0.99."""
    x, y = bn_models.blobs()
    keras.utils.set_random_seed(8)
    base = keras.Sequential(
        [keras.Input((16,)), keras.layers.Dense(32), keras.layers.BatchNormalization(), keras.layers.ReLU()],
        name="base",
    )
    gamma, beta, _, _ = base.layers[1].get_weights()
    base.layers[1].set_weights([gamma, beta, np.full(32, 3.0, "float32"), np.full(32, 0.5, "float32")])
    base.trainable = False
    model = keras.Sequential([keras.Input((16,)), base, keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="categorical_crossentropy", metrics=["acc"])
    base.trainable = True
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="categorical_crossentropy", metrics=["acc"])
    model.fit(x, y, batch_size=32, epochs=5, verbose=0, callbacks=list(callbacks))
    return model, x, y


def test_loaded_statistics_get_no_false_advice_about_initial_values():
    from pytest_bncheck import BNConsistencyCallback

    x, y = bn_models.blobs()
    callback = BNConsistencyCallback(x, y, batch_size=32, print_fn=lambda text: None)
    model, x, y = pretrained_then_unfrozen([callback])
    seen = callback.report  # the callback saw the loaded statistics before fit
    assert seen.cause == "batchnorm"
    (layer,) = seen.layers
    assert layer.starting_values == "loaded" and layer.updates == 15 and layer.updates_source == "counted"
    text = str(seen)
    assert "initial values (mean 0, variance 1)" not in text
    assert "still hold 86% of the pretrained (loaded) statistics they started from" in text
    # The function alone never saw them: it says what is known, and no more.
    alone = str(check_bn_consistency(model, x, y, batch_size=32, raise_on_failure=False))
    assert "leaves 86% of their initial values" not in alone
    assert "mean 0 / variance 1 if the layers were built fresh, the loaded values if pretrained" in alone


def test_updates_count_every_training_step_under_gradient_accumulation():
    x, y = bn_models.blobs()
    model = bn_models.bn_mlp()
    model.compile(
        optimizer=keras.optimizers.Adam(0.01, gradient_accumulation_steps=4),
        loss="categorical_crossentropy", metrics=["acc"],
    )
    model.fit(x, y, batch_size=32, epochs=3, verbose=0)  # 9 steps, 2 optimizer updates
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 2
    report = check_bn_consistency(model, x, y, batch_size=32, raise_on_failure=False)
    assert [layer.updates for layer in report.layers] == [9, 9]


def test_a_layer_called_twice_per_step_is_updated_twice():
    x, y = bn_models.blobs()
    keras.utils.set_random_seed(9)
    shared = keras.layers.BatchNormalization()
    inputs = keras.Input((16,))
    hidden = shared(keras.layers.ReLU()(shared(keras.layers.Dense(16, use_bias=False)(inputs))))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="categorical_crossentropy", metrics=["acc"])
    model.fit(x, y, batch_size=32, epochs=3, verbose=0)
    report = check_bn_consistency(model, x, y, batch_size=32, raise_on_failure=False)
    (layer,) = report.layers
    assert layer.updates == 18 and layer.initial_share == pytest.approx(0.99**18)


def test_batch_composition_does_not_turn_a_batchnorm_gap_into_other():
    x, y = bn_models.blobs()
    order = np.argsort(y.argmax(axis=1), kind="stable")  # sorted by class: data-order batches hold one class
    x, y = x[order], y[order]
    model = bn_models.bn_mlp()
    model.fit(x, y, batch_size=32, epochs=3, verbose=0)  # fit shuffles: its batches mix the classes
    report = check_bn_consistency(model, x, y, batch_size=32, raise_on_failure=False)
    assert report.cause == "batchnorm" and report.train_mode_metrics["acc"] > 0.9
    (note,) = [n for n in report.notes if n.startswith("training mode in data order did not reproduce fit")]
    assert "uses shuffled (seed" in note
    in_order = check_bn_consistency(model, x, y, batch_size=32, shuffle=False, raise_on_failure=False)
    assert in_order.cause == "other" and in_order.train_mode_metrics["acc"] < 0.6  # what the order alone gives
    assert "recalibrate_batchnorm(model, x, batch_size=32, shuffle=True) closes the gap" in str(report)
    recalibrate_batchnorm(model, x, batch_size=32, shuffle=True)
    assert check_bn_consistency(model, x, y, batch_size=32).passed
