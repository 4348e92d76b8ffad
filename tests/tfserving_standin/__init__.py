"""A test-only stand-in for TF Serving, speaking its real wire protocol.

``server.py`` serves the SavedModels named in a ``models.config`` (TF Serving's
``model_config_list``) through the ``tensorflow-serving-api`` servicers
(``PredictionService.Predict``/``GetModelMetadata``, ``ModelService.GetModelStatus``)
and TF Serving's REST routes (``:predict``, ``/metadata``, version status), so the
service's clients are tested against the protocol they meet in production. The
product never imports this package; production uses the ``tensorflow/serving``
container (see ``serving/README.md``).

``launch.standin(...)`` runs it as a subprocess (so a test can stop it or make it
slow); ``tiny_export.export_tiny(...)`` writes a real export (``models.export``)
with untrained weights for hermetic tests.
"""

# Before any TensorFlow import of this package: models sets TF_USE_LEGACY_KERAS.
import models  # noqa: F401
