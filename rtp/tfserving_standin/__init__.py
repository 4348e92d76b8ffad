"""A local stand-in for TF Serving, speaking its real wire protocol.

Used where no ``tensorflow_model_server`` binary exists (this machine, CI, a
laptop): the integration tests of the service's gRPC and REST backends and the
serving benchmarks run against it. ``server.py`` serves the SavedModels named in
a ``models.config`` (TF Serving's ``model_config_list``) through the
``tensorflow-serving-api`` servicers (``PredictionService.Predict``/``GetModelMetadata``,
``ModelService.GetModelStatus``) and TF Serving's REST routes (``:predict``,
``/metadata``, version status), so the clients meet the protocol they meet in
production. It is not a production server: the service never imports this
package, and a deployment runs the ``tensorflow/serving`` container (see
``serving/README.md``).

``launch.standin(...)`` runs it as a subprocess (so a caller can stop it or make
it slow); ``tiny_export.export_tiny(...)`` writes a real export (``models.export``)
with untrained weights for it, or the in-process backend, to serve.
"""

# Before any TensorFlow import of this package: models sets TF_USE_LEGACY_KERAS.
import models  # noqa: F401
