"""The backfill's coders: values survive encoding, sizes are estimated without it."""

from __future__ import annotations

import pyarrow as pa
import pytest

from beam_pipelines.history import arrow_schema
from beam_pipelines.state.columns import ScoredColumns
from beam_pipelines.state.records import ScoredEvent
from beam_pipelines.transforms.batch_coders import ArrowTableCoder, ScoredColumnsCoder
from feature_repo.features import ITEM_REALTIME


def _columns(*event_ids: str) -> ScoredColumns:
    return ScoredColumns.from_events(
        ScoredEvent(eid, "u1", "i1", "view", 1_700_000_000_000 + k, 0.25 * k, k % 2 == 0, True, k)
        for k, eid in enumerate(event_ids)
    )


@pytest.mark.parametrize(
    "columns",
    [ScoredColumns.empty(), _columns("e1"), _columns("e1", "e2", "e3"), _columns("a\x00b", "")],
)
def test_scored_columns_round_trip(columns):
    coder = ScoredColumnsCoder()
    decoded = coder.decode(coder.encode(columns))
    assert decoded == columns
    assert [type(c[0]) for c in decoded if c] == [type(c[0]) for c in columns if c]
    assert coder.estimate_size(columns) == 80 * columns.size


def test_arrow_table_round_trip():
    schema = arrow_schema(ITEM_REALTIME)
    table = pa.Table.from_pylist([{"item_id": "i1", "item_event_count": 3}], schema)
    coder = ArrowTableCoder()
    assert coder.decode(coder.encode(table)).equals(table)
    assert coder.estimate_size(table) == table.nbytes
