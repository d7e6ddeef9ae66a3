"""Bad input gives one clear line naming the problem and the fix, never a Keras traceback."""

from __future__ import annotations

import bn_models
import numpy as np
import pytest

import keras
import tensorflow as tf
from pytest_bncheck import BNCheckInputError, check_bn_consistency, recalibrate_batchnorm


@pytest.fixture(scope="module")
def trained():
    return bn_models.undertrained(epochs=1)


def raised(call, *args, **kwargs) -> BNCheckInputError:
    with pytest.raises(BNCheckInputError) as info:
        call(*args, **kwargs)
    error = info.value
    message = str(error)
    assert "\n" not in message and len(message) < 300
    assert error.__cause__ is None  # no chained Keras traceback
    assert error.__context__ is None or error.__suppress_context__
    return error


def test_not_a_keras_model():
    error = raised(check_bn_consistency, object(), np.zeros((4, 16)), np.zeros((4, 3)))
    assert isinstance(error, TypeError)
    assert str(error).startswith("model must be a Keras 3 keras.Model, got builtins.object")


def test_uncompiled_model():
    model = keras.Sequential([keras.Input((16,)), keras.layers.BatchNormalization()], name="raw")
    error = raised(check_bn_consistency, model, np.zeros((4, 16)), np.zeros((4, 16)))
    assert "model 'raw' is not compiled with a loss: call model.compile(" in str(error)


def test_no_history_and_no_previous_fit():
    model = bn_models.bn_mlp(name="never_fit")
    x, y = bn_models.blobs()
    error = raised(check_bn_consistency, model, x, y)
    assert str(error).startswith("no fit history for model 'never_fit': call fit() first, or pass history=")


def test_infinite_dataset_without_steps(trained):
    model, x, y, _ = trained
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32).repeat()
    error = raised(check_bn_consistency, model, dataset)
    assert "infinite tf.data.Dataset: pass steps=" in str(error)


def test_infinite_pydataset_without_steps(trained):
    model, x, y, _ = trained

    class Endless(keras.utils.PyDataset):
        num_batches = None

        def __getitem__(self, index):
            return x[:32], y[:32]

    assert "infinite PyDataset" in str(raised(check_bn_consistency, model, Endless()))


@pytest.mark.parametrize("empty", ["arrays", "dataset"])
def test_empty_data(trained, empty):
    model, x, y, _ = trained
    data = (x[:0], y[:0]) if empty == "arrays" else (tf.data.Dataset.from_tensor_slices((x[:0], y[:0])).batch(32),)
    error = raised(check_bn_consistency, model, *data)
    assert "pass the data the model was trained on" in str(error)


def test_nan_fit_metrics():
    x, y = bn_models.blobs()
    model = bn_models.bn_mlp()
    x = x.copy()
    x[0, 0] = np.nan
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    error = raised(check_bn_consistency, model, x, y)
    assert "is NaN in the last epoch: training diverged" in str(error)


def test_one_shot_generator(trained):
    model, x, y, _ = trained
    error = raised(check_bn_consistency, model, ((x[i : i + 32], y[i : i + 32]) for i in range(0, 96, 32)))
    assert isinstance(error, TypeError) and "one-shot generator" in str(error)


def test_data_keras_would_reject(trained):
    model, x, y, _ = trained
    error = raised(check_bn_consistency, model, x, y[:10])
    assert str(error).startswith("x/y are not accepted as Model.evaluate would accept them:")


def test_bad_steps_and_tolerance(trained):
    model, x, y, _ = trained
    assert "steps must be a positive integer" in str(raised(check_bn_consistency, model, x, y, steps=0))
    assert "atol must be a non-negative number" in str(raised(check_bn_consistency, model, x, y, atol=-1))


def test_recalibrate_rejects_non_models_and_handles_models_without_batchnorm():
    assert isinstance(raised(recalibrate_batchnorm, "model", np.zeros((2, 2))), TypeError)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)], name="plain")
    summary = recalibrate_batchnorm(model, np.zeros((8, 4), "float32"))
    assert summary.recalibrated == [] and "recalibrated 0 BatchNormalization layers" in str(summary)


def one_line(call, *args, **kwargs) -> str:
    """Like raised(), for messages that also show the shapes (up to two short lines' worth)."""
    with pytest.raises(BNCheckInputError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400 and info.value.__cause__ is None
    assert "Traceback" not in message and "\x1b[" not in message
    return message


@pytest.mark.parametrize(
    ("argument", "value", "kind"),
    [
        ("atol", "abc", TypeError), ("rtol", [0.1], TypeError), ("atol", True, TypeError),
        ("batch_size", -1, ValueError), ("batch_size", 2.5, TypeError), ("batch_size", 0, ValueError),
        ("steps", True, TypeError), ("raise_on_failure", "no", TypeError), ("class_weight", [1.0, 2.0], TypeError),
    ],
)
def test_every_bad_argument_is_named_in_one_line(trained, argument, value, kind):
    model, x, y, _ = trained
    error = raised(check_bn_consistency, model, x, y, **{argument: value})
    assert isinstance(error, kind) and str(error).startswith(f"{argument} must be ")
    assert repr(value) in str(error)


def test_numpy_integers_are_integers(trained):
    model, x, y, _ = trained
    report = check_bn_consistency(model, x, y, batch_size=np.int64(32), steps=np.int32(3), raise_on_failure=False)
    assert report.batches == 3 and report.samples == 96


def test_recalibrate_and_callback_validate_their_arguments(trained):
    from pytest_bncheck import BNConsistencyCallback

    model, x, y, _ = trained
    assert str(raised(recalibrate_batchnorm, model, x, batch_size=0)).startswith("batch_size must be ")
    assert str(raised(recalibrate_batchnorm, model, x, steps=1.5)).startswith("steps must be ")
    assert str(raised(BNConsistencyCallback, x, y, atol="x")).startswith("atol must be ")
    assert str(raised(BNConsistencyCallback, x, y, print_fn="stdout")).startswith("print_fn must be callable")


def test_wrong_input_shape_says_what_the_model_takes(trained):
    model, x, y, _ = trained
    message = one_line(check_bn_consistency, model, x[:, :8], y)
    assert message.startswith("the data does not fit model 'bn_mlp', which takes (None, 16) float32")
    assert "x's batches are (32, 8) float32" in message and "incompatible" in message


def test_wrong_number_of_classes_says_the_shapes(trained):
    model, x, y, _ = trained
    message = one_line(check_bn_consistency, model, x, np.ones((96, 5), "float32"))
    assert "outputs (None, 3) float32" in message and "y's (32, 5) float32" in message


def test_unbatched_dataset_says_to_batch_it(trained):
    model, x, y, _ = trained
    message = one_line(check_bn_consistency, model, tf.data.Dataset.from_tensor_slices((x, y)))
    assert message.startswith("x yields single samples ((16,) float32) but model 'bn_mlp' takes batches")
    assert "dataset.batch(32)" in message


def test_string_data(trained):
    model, _, y, _ = trained
    message = one_line(check_bn_consistency, model, np.array([["a"] * 16] * 96), y)
    assert "not accepted as Model.evaluate would accept them" in message and "dtype" in message


def test_dataset_of_unknown_length_without_steps_is_refused_not_read_forever(trained):
    model, x, y, _ = trained

    def forever():
        while True:
            yield x[:32], y[:32]

    spec = (tf.TensorSpec((None, 16)), tf.TensorSpec((None, 3)))
    endless = [
        tf.data.Dataset.from_generator(forever, output_signature=spec),
        tf.data.Dataset.from_tensor_slices((x, y)).batch(32).repeat().filter(lambda a, b: True),
    ]
    for dataset in endless:
        assert "tf.data.Dataset of unknown length" in one_line(check_bn_consistency, model, dataset)
        report = check_bn_consistency(model, dataset, steps=2, raise_on_failure=False)
        assert report.batches == 2
    # A finite one that fit was seen reading to its end (the audit says so) is checked whole.
    from pytest_bncheck.consistency import run_check

    finite = tf.data.Dataset.from_tensor_slices((x, y)).batch(32).filter(lambda a, b: True)
    assert run_check(model, finite, length_known=True).batches == 3


def test_unsupported_keras_backends_are_refused_in_one_line(trained, monkeypatch):
    model, x, y, _ = trained
    monkeypatch.setattr(keras.config, "backend", lambda: "openvino")
    message = str(raised(check_bn_consistency, model, x, y))
    assert message.startswith(
        "the runtime check supports Keras's tensorflow, jax, torch backends, and Keras runs on 'openvino'"
    )
    assert "recalibrat" not in message and "KERAS_BACKEND=tensorflow" in str(raised(recalibrate_batchnorm, model, x))
