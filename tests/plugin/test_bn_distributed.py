"""tf.distribute.MirroredStrategy over two logical CPU devices (one subprocess for all cases:
logical devices must be configured before TensorFlow initializes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def cases() -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, str(HERE / "distributed_cases.py")], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_two_replicas_and_a_distributed_fit_leaves_them_different(cases):
    assert cases["replicas"] == 2 and cases["fit_left_replicas_different"]


def test_differing_replicas_are_detected_and_reported_outside_the_scope(cases):
    outside = cases["outside"]
    assert outside["replicas"] == 2 and outside["most_different"] == 1
    assert outside["shift"] == pytest.approx(outside["expected_shift"], rel=1e-4) and outside["shift"] > 0
    (note,) = [n for n in outside["notes"] if "differ between the 2 replicas" in n]
    assert "replica 1's moving_mean is up to" in note and "this check used replica 0's" in note


def test_inside_the_scope_the_losses_are_what_evaluate_reports(cases):
    inside = cases["inside"]
    assert inside["check"] == pytest.approx(inside["evaluate"], rel=1e-5)
    assert any("2 replicas of the distribution strategy hold identical" in n for n in inside["notes"])


def test_recalibration_writes_the_same_statistics_to_every_replica(cases):
    outside = cases["recalibrated_outside"]
    assert outside["equal"] and outside["exact"]
    assert outside["check"] == pytest.approx(outside["evaluate"], rel=1e-5)
    assert cases["recalibrated_inside"]["equal"]
