"""Quiet TensorFlow's start-up noise in this example run (our own process; never set by the plugin)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
