"""Online experiments: the typed config, deterministic assignment, the attribution of
engagements to exposures and the statistics of a per-variant comparison.

Pure Python + NumPy (no Beam at import, no TensorFlow, no FastAPI): the service
assigns with it, the report and a Beam job compute with it, one implementation each.
"""
