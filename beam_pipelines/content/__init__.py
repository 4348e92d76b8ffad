"""Content encoders: item text (and, through the same interface, images or audio)
to fixed-width vectors that exist before any interaction does.

    from beam_pipelines.content import encode_catalog, shared_encoder
    vectors = encode_catalog(titles, genres)      # float32 [N, 384], unit rows
    version = shared_encoder().name               # "all-MiniLM-L6-v2@gt-0.1.0"

``encoder`` holds the interface and the registry (the plug-in point for other
modalities), ``minilm`` the pretrained text encoder in NumPy, ``catalog`` the
item text and whole-catalogue encoding. Nothing here imports TensorFlow.
"""

from beam_pipelines.content.catalog import encode_catalog, item_text, shared_encoder
from beam_pipelines.content.encoder import (
    DEFAULT_TEXT_ENCODER,
    ContentEncoder,
    load_encoder,
    register_encoder,
)

__all__ = [
    "DEFAULT_TEXT_ENCODER",
    "ContentEncoder",
    "encode_catalog",
    "item_text",
    "load_encoder",
    "register_encoder",
    "shared_encoder",
]
