"""Shared test set-up.

TensorFlow prints start-up noise on stderr unless both variables are set before it is
imported; we set them only in our own test process (and the subprocesses it starts
inherit them), never from the plugin.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
