"""Items that embed from a pretrained content vector too (issue 17).

``ContentItemEncoder`` is the sequential retriever's ``ItemEncoder`` plus a
learned projection of each item's pretrained text embedding
(``beam_pipelines.content.encode_catalog``: all-MiniLM-L6-v2 over
``item_text(title, genres)``), so an item nobody has interacted with gets a
vector close to items whose titles and genres read alike. The id embedding and
the hashed-token content stay; the pretrained part only adds.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import numpy as np
import tensorflow as tf

from models.catalog import Catalog
from models.sequential import ItemEncoder

LOG = logging.getLogger(__name__)
CACHE_ENV = "RTP_CONTENT_CACHE"  # where encoded vectors are kept between runs
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "rtp", "content")


class ContentItemEncoder(ItemEncoder):
    """``ItemEncoder`` + ``Dense(dim)`` of a fixed ``[catalogue, D]`` pretrained table."""

    def __init__(
        self,
        content: Mapping[str, np.ndarray],
        n_ids: int,
        n_genres: int,
        title_buckets: int,
        dim: int,
        pretrained: np.ndarray,
        **kwargs,
    ):
        super().__init__(content, n_ids, n_genres, title_buckets, dim, **kwargs)
        self._pretrained = tf.constant(np.asarray(pretrained, np.float32))
        self.pretrained_out = tf.keras.layers.Dense(dim, use_bias=False, name="pretrained_out")

    def all_items(self) -> tf.Tensor:
        return super().all_items() + self.pretrained_out(self._pretrained)


def catalog_vectors(catalog: Catalog) -> np.ndarray | None:
    """Pretrained content vectors of every catalogue row, or None when the catalogue
    has no text (no ``--items`` metadata) or the encoder is not installed."""
    if not any(catalog.titles) and not any(catalog.genres):
        return None
    try:
        from beam_pipelines.content import encode_catalog
    except ImportError as e:  # pragma: no cover - the [pipeline] extra ships it
        LOG.warning("no content encoder (%s): items embed from id and hashed tokens", e)
        return None
    cache = os.environ.get(CACHE_ENV, DEFAULT_CACHE)
    return encode_catalog(
        [str(t) for t in catalog.titles], [str(g) for g in catalog.genres], cache_dir=cache
    )
