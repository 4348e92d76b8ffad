"""Point-in-time feature history as Parquet, in the layout Feast's file source reads."""

from __future__ import annotations

import pyarrow as pa

from feature_repo import features as f

_ARROW = {
    f.FLOAT: pa.float32(),
    f.INT: pa.int64(),
    f.STRING: pa.string(),
    f.FLOAT_LIST: pa.list_(pa.float32()),
    f.INT_LIST: pa.list_(pa.int64()),
    f.STRING_LIST: pa.list_(pa.string()),
}


def arrow_schema(view: str) -> pa.Schema:
    """Entity key, ``event_timestamp`` (UTC, ms) and every feature column of ``view``."""
    key, schema = f.FEATURE_VIEWS[view]
    fields = [pa.field(key, pa.string()), pa.field(f.EVENT_TIMESTAMP, pa.timestamp("ms", tz="UTC"))]
    fields += [pa.field(name, _ARROW[kind]) for name, kind in schema.items()]
    return pa.schema(fields)
