"""Pooling moments (Chan's combination), metric directions, tolerance precedence."""

from __future__ import annotations

import numpy as np
import pytest

import keras
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pytest_bncheck.metrics import DEFAULT_ATOL, DEFAULT_RTOL, Tolerance, agrees, direction, resolve
from pytest_bncheck.stats import MomentAccumulator, Moments, batch_moments, combine, moments_of

values = arrays(np.float64, st.tuples(st.integers(1, 40), st.integers(1, 4)),
                elements=st.floats(-1e3, 1e3, allow_nan=False))


@settings(max_examples=60, deadline=None)
@given(values, st.lists(st.integers(1, 40), min_size=1, max_size=6))
def test_combining_batches_gives_the_population_moments(data, cuts):
    edges = sorted({0, len(data), *[c % len(data) for c in cuts]})
    pooled = Moments(0.0, np.zeros(data.shape[1]), np.zeros(data.shape[1]))
    for start, stop in zip(edges, edges[1:]):
        pooled = combine(pooled, moments_of(data[start:stop], axis=-1))
    assert pooled.count == len(data)
    np.testing.assert_allclose(pooled.mean, data.mean(axis=0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(pooled.variance, data.var(axis=0), rtol=1e-7, atol=1e-6)


def test_average_of_batch_variances_would_be_wrong():
    data = np.array([[0.0], [0.0], [10.0], [10.0]])
    halves = [moments_of(data[:2], -1), moments_of(data[2:], -1)]
    assert np.mean([h.variance for h in halves]) == 0.0  # what naive averaging gives
    assert combine(*halves).variance[0] == pytest.approx(25.0)  # the population variance


@pytest.mark.skipif(keras.config.backend() != "tensorflow", reason="folds tf.function outputs")
def test_in_graph_accumulator_matches_numpy_on_images():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    images = rng.normal(3.0, 2.0, (10, 5, 5, 4)).astype("float32")
    accumulator = MomentAccumulator(4)

    @tf.function
    def moments(batch):
        return batch_moments(batch, -1)

    for start in range(0, 10, 3):  # batches of 3, 3, 3, 1
        accumulator.update(*moments(tf.constant(images[start : start + 3])))
    result = accumulator.result()
    expected = moments_of(images, axis=-1)
    assert result.count == 250
    np.testing.assert_allclose(result.mean, expected.mean, rtol=1e-6)
    np.testing.assert_allclose(result.variance, expected.variance, rtol=1e-5)
    channels_first = np.moveaxis(images, -1, 1)
    np.testing.assert_allclose(
        np.asarray(batch_moments(tf.constant(channels_first), 1)[1]), images.mean(axis=(0, 1, 2)), rtol=1e-5
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("loss", "lower"), ("output_1_loss", "lower"), ("mean_squared_error", "lower"), ("mae", "lower"),
        ("categorical_crossentropy", "lower"), ("acc", "higher"), ("accuracy", "higher"),
        ("sparse_categorical_accuracy", "higher"), ("cls_acc", "higher"), ("auc", "higher"), ("auc_1", "higher"),
        ("precision", "higher"), ("recall_at_precision", "higher"), ("f1_score", "higher"),
        ("my_custom_score", None), ("mean", None),
    ],
)
def test_direction(name, expected):
    assert direction(name) == expected


def test_agreement_is_one_sided_for_known_directions():
    tol = Tolerance(atol=0.05, rtol=0.0)
    assert agrees(0.2, 1.0, "loss", tol)  # inference loss much lower: better, agrees
    assert not agrees(1.2, 1.0, "loss", tol)
    assert agrees(0.99, 0.5, "acc", tol)
    assert not agrees(0.3, 1.0, "acc", tol)
    assert not agrees(0.2, 1.0, "my_score", tol) and not agrees(1.8, 1.0, "my_score", tol)
    assert agrees(1.04, 1.0, "my_score", tol)
    assert not agrees(float("nan"), 1.0, "loss", tol)


def test_tolerance_precedence_first_source_wins_per_field():
    call, marker, cli, ini = {"atol": 0.5}, {"atol": 0.4, "rtol": 0.3}, {"rtol": 0.2}, {"atol": 0.1, "rtol": 0.1}
    assert resolve(call, marker, cli, ini) == Tolerance(0.5, 0.3)
    assert resolve({}, {}, cli, ini) == Tolerance(0.1, 0.2)
    assert resolve({"atol": None}, None, {}, {}) == Tolerance(DEFAULT_ATOL, DEFAULT_RTOL)
