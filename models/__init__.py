"""TFRS retrieval and ranking models, training and export.

TensorFlow Recommenders needs Keras 2. This is the one place that says so: it
runs before any module of this package (and so before TensorFlow) is imported.
Import ``models`` (or anything under it) before importing TensorFlow yourself.
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
