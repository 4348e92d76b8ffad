"""The item metadata contract (``beam_pipelines.items``) and the item pipeline's
transforms on ``TestPipeline``."""

from __future__ import annotations

import json

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to

from beam_pipelines.events import Reason
from beam_pipelines.items import (
    MAX_TITLE_CHARS,
    ItemRecord,
    ItemValidationError,
    movielens_line_to_json,
    parse_item,
)
from beam_pipelines.transforms.dead_letters import DEAD_LETTER
from beam_pipelines.transforms.items import (
    EMBEDDED,
    ENCODE_FAILED,
    ITEMS,
    ContentModelHandler,
    EmbedItems,
    ParseItems,
    content_row,
)
from feature_repo.features import EVENT_TIMESTAMP, ITEM_CONTENT_FEATURES, ITEM_KEY
from tests.helpers.pipelines import batch_pipeline


def _msg(**fields) -> bytes:
    return json.dumps(fields).encode()


def test_a_full_upload_parses():
    item = parse_item(
        _msg(
            item_id="v42",
            title="Dunk contest highlights",
            description="slow motion",
            tags=["basketball", "dunk"],
            topic="sports",
            creator="c7",
            duration_ms=15_000,
            upload_time="2024-05-01T12:00:00Z",
            views=3,  # unknown fields are ignored
        )
    )
    assert item == ItemRecord(
        "v42",
        "Dunk contest highlights",
        "slow motion",
        ("basketball", "dunk"),
        "sports",
        "c7",
        15_000,
        1_714_564_800_000,
    )
    assert item.text == "Dunk contest highlights. basketball, dunk, sports. slow motion"


def test_catalogue_lines_parse():
    movie = parse_item(movielens_line_to_json(b'11,"American President, The (1995)",Comedy|Drama'))
    assert (movie.item_id, movie.title, movie.tags) == (
        "11",
        "American President, The (1995)",
        ("Comedy", "Drama"),
    )
    simulated = parse_item(
        _msg(
            item_id="i1",
            topic="cooking",
            title="pasta",
            duration_ms=9000,
            release_ms=1_700_000_000_000,
        )
    )
    assert simulated.upload_ms == 1_700_000_000_000 and simulated.text == "pasta. cooking"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{not json", Reason.MALFORMED_JSON),
        (b"[1, 2]", Reason.NOT_OBJECT),
        (b"\xff\xfe", Reason.NOT_UTF8),
        (_msg(title="no id"), Reason.MISSING_FIELD),
        (_msg(item_id="  "), Reason.EMPTY_FIELD),
        (_msg(item_id="x" * 129), Reason.FIELD_TOO_LONG),
        (_msg(item_id="i", title="t" * (MAX_TITLE_CHARS + 1)), Reason.FIELD_TOO_LONG),
        (_msg(item_id="i", tags=["t"] * 33), Reason.FIELD_TOO_LONG),
        (_msg(item_id="i", tags=[1]), Reason.BAD_TYPE),
        (_msg(item_id="i", duration_ms=-1), Reason.BAD_TYPE),
        (_msg(item_id="i", upload_time="yesterday"), Reason.BAD_TIMESTAMP),
        (b"{" + b" " * 40_000 + b"}", Reason.OVERSIZE),
        (movielens_line_to_json(b",Untitled,Drama"), Reason.MISSING_FIELD),
    ],
)
def test_bad_records_name_their_reason(data, reason):
    with pytest.raises(ItemValidationError) as err:
        parse_item(data)
    assert err.value.reason is reason


def test_parse_items_splits_items_and_dead_letters():
    good, bad = _msg(item_id="a", title="A"), b"{oops"
    with batch_pipeline() as p:
        out = p | beam.Create([good, bad]) | ParseItems()
        assert_that(out[ITEMS] | beam.Map(lambda i: i.item_id), equal_to(["a"]), label="Items")
        assert_that(
            out[DEAD_LETTER] | beam.Map(lambda d: (d.reason, d.payload)),
            equal_to([(Reason.MALFORMED_JSON.value, bad)]),
            label="Letters",
        )


def test_embed_items_runs_the_real_encoder_in_batches():
    from beam_pipelines.content import shared_encoder

    items = [ItemRecord(f"i{n}", title=t) for n, t in enumerate(["space rocket", "pasta recipe"])]
    expected = shared_encoder().encode([i.text for i in items])
    handler = ContentModelHandler(max_batch_size=2)
    with batch_pipeline() as p:
        out = p | beam.Create(items) | EmbedItems(handler)
        rows = out[EMBEDDED] | beam.Map(content_row, 123)

        def check(got):
            by_id = {r[ITEM_KEY]: r for r in got}
            assert set(by_id) == {"i0", "i1"}
            for n, item in enumerate(items):
                row = by_id[item.item_id]
                assert set(row) == {ITEM_KEY, EVENT_TIMESTAMP, *ITEM_CONTENT_FEATURES}
                assert row["item_content_version"] == "all-MiniLM-L6-v2@gt-0.1.0"
                assert row[EVENT_TIMESTAMP] == 123  # no upload time: time of encoding
                np.testing.assert_allclose(row["item_content_embedding"], expected[n], atol=1e-5)

        assert_that(rows, check)


def test_a_failing_batch_becomes_dead_letters_not_a_crash():
    handler = ContentModelHandler("tests.helpers.content:FailingTextEncoder", max_batch_size=1)
    items = [ItemRecord("ok", title="fine"), ItemRecord("bad", title="boom")]
    with batch_pipeline() as p:
        out = p | beam.Create(items) | EmbedItems(handler)
        assert_that(
            out[EMBEDDED] | beam.Map(lambda r: (r.example.item_id, r.model_id)),
            equal_to([("ok", "failing-text@test")]),
            label="Embedded",
        )
        assert_that(
            out[DEAD_LETTER] | beam.Map(lambda d: (d.reason, json.loads(d.payload)["item_id"])),
            equal_to([(ENCODE_FAILED, "bad")]),
            label="Letters",
        )


def test_an_image_encoder_plugs_into_the_same_handler():
    handler = ContentModelHandler(
        "tests.helpers.content:FakeImageEncoder",
        input_of=lambda item: f"thumbnail of {item.item_id}".encode(),
    )
    with batch_pipeline() as p:
        out = p | beam.Create([ItemRecord("v1"), ItemRecord("v2")]) | EmbedItems(handler)
        assert_that(
            out[EMBEDDED] | beam.Map(lambda r: (r.example.item_id, len(r.inference), r.model_id)),
            equal_to([("v1", 8, "fake-image@test"), ("v2", 8, "fake-image@test")]),
        )


def test_handler_arguments_are_checked():
    with pytest.raises(ValueError, match="min_batch_size"):
        ContentModelHandler(min_batch_size=8, max_batch_size=4)
