"""MirroredStrategy cases for test_bn_distributed.py, in one process (two logical CPU devices
must be configured before TensorFlow initializes). Prints one JSON object."""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import bn_models  # noqa: E402

from pytest_bncheck import check_bn_consistency, recalibrate_batchnorm  # noqa: E402


def replicas(variable):
    return [np.asarray(v.numpy()) for v in variable.value.values]


def metrics(report):
    return {"check": report.inference_metrics, "train": report.train_mode_metrics}


def main():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    x, y = bn_models.blobs()
    out = {"replicas": strategy.num_replicas_in_sync}
    with strategy.scope():
        model = bn_models.bn_mlp()
        model.fit(x, y, batch_size=32, epochs=3, verbose=0)
    first = model.layers[1]
    means = replicas(first.moving_mean)
    out["fit_left_replicas_different"] = bool(not np.array_equal(means[0], means[1]))

    # Outside the scope: the differing replicas are detected and reported.
    report = check_bn_consistency(model, x, y, batch_size=32, raise_on_failure=False)
    layer = next(layer for layer in report.layers if layer.path == first.name)
    inputs = model.layers[0](x).numpy().astype(np.float64)
    expected_shift = np.max(np.abs(means[1] - means[0]) / np.sqrt(inputs.var(axis=0) + first.epsilon))
    out["outside"] = {
        "replicas": layer.replicas, "most_different": layer.replica_most_different,
        "shift": layer.replica_mean_shift_max, "expected_shift": float(expected_shift),
        "notes": report.notes,
    }

    # Inside the scope, with every replica holding the same statistics, the check's numbers are
    # evaluate()'s (Keras divides the loss by the replicas in compute_loss, test_step undoes it).
    with strategy.scope():
        twin = bn_models.bn_mlp()
        twin.fit(x, y, batch_size=32, epochs=3, verbose=0)
        for ref_layer in (twin.layers[1], twin.layers[4]):
            for variable in (ref_layer.moving_mean, ref_layer.moving_variance):
                value = replicas(variable)[0]
                for copy in variable.value.values:
                    copy.assign(value)
        inside = check_bn_consistency(twin, x, y, batch_size=32, raise_on_failure=False)
        evaluated = twin.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    out["inside"] = {"check": inside.inference_metrics, "evaluate": evaluated, "notes": inside.notes}

    # Recalibration writes the same statistics to every replica, outside and inside the scope.
    recalibrate_batchnorm(model, x, batch_size=32)
    means = replicas(first.moving_mean)
    out["recalibrated_outside"] = {
        "equal": bool(np.array_equal(means[0], means[1])),
        "exact": bool(np.allclose(means[1], inputs.mean(axis=0), rtol=1e-5, atol=1e-5)),
        "check": check_bn_consistency(model, x, y, batch_size=32, raise_on_failure=False).inference_metrics,
        "evaluate": model.evaluate(x, y, batch_size=32, verbose=0, return_dict=True),
    }
    with strategy.scope():
        third = bn_models.bn_mlp()
        third.fit(x, y, batch_size=32, epochs=3, verbose=0)
        recalibrate_batchnorm(third, x, batch_size=32)
    means = replicas(third.layers[4].moving_variance)
    out["recalibrated_inside"] = {"equal": bool(np.array_equal(means[0], means[1]))}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
