"""The item pipeline end to end: a catalogue file on the FnApiRunner, and item
uploads through the real Pub/Sub emulator into the streaming job (a subprocess on
the DirectRunner), both into the embedded SQLite online store.

The streaming test publishes a warm-up item first (the job's start-up, loading
the encoder, opening the store), then a new item, and reports the time from its
publication to its ``item_content`` row being readable.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from beam_pipelines.content import item_text, shared_encoder
from beam_pipelines.item_job import parser, run_batch
from beam_pipelines.transforms.dead_letters import DeadLetter
from feature_repo.features import ITEM_CONTENT
from tests.helpers.item_job import publish, reader, wait_for_row

VERSION = "all-MiniLM-L6-v2@gt-0.1.0"
pytestmark = pytest.mark.timeout(900)


def _letters(directory: Path) -> list[DeadLetter]:
    letters = []
    for path in sorted(directory.glob("*.jsonl")):
        letters += [DeadLetter.from_json(x) for x in path.read_bytes().splitlines()]
    return letters


def test_a_catalogue_file_is_encoded_into_the_store_and_the_item_table(tmp_path):
    catalogue = tmp_path / "movies.csv"
    catalogue.write_text(
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children\n"
        '11,"American President, The (1995)",Comedy|Drama|Romance\n'
        f",{'x' * 10},Drama\n"  # no id: a dead letter
    )
    out, db = tmp_path / "out", tmp_path / "store" / "online.db"
    args = parser().parse_args(
        ["--items", str(catalogue), "--out", str(out), "--online", "--store_path", str(db)]
    )
    summary = run_batch(args)
    assert (summary["items_valid"], summary["items_invalid"]) == (2, 1)
    assert summary["content_rows_written"] == 2
    expected = shared_encoder().encode(
        [
            item_text("Toy Story (1995)", "Adventure|Animation|Children"),
            item_text("American President, The (1995)", "Comedy|Drama|Romance"),
        ]
    )
    with reader(db) as client:
        rows = client.read(ITEM_CONTENT, ["1", "11"])
    for n, item in enumerate(["1", "11"]):
        assert rows[item]["item_content_version"] == VERSION
        np.testing.assert_allclose(rows[item]["item_content_embedding"], expected[n], atol=1e-6)
    table = pq.read_table(out / "items").to_pylist()
    assert sorted(r["item_id"] for r in table) == ["1", "11"]
    assert {r["content_version"] for r in table} == {VERSION}
    assert [len(r["content_embedding"]) for r in table] == [384, 384]
    letters = _letters(out / "dead_letters")
    assert [letter.reason for letter in letters] == ["missing_field"]


def test_a_published_upload_is_encoded_into_the_store(item_job):
    job = item_job.job
    publish(item_job, {"item_id": "warm-up", "title": "first upload", "topic": "cooking"})
    wait_for_row(job, item_job.log, item_job.db, "warm-up", timeout_s=300)

    upload = {
        "item_id": "new-1",
        "title": "Insane dunk at the buzzer",
        "description": "last second basketball highlights",
        "tags": ["basketball", "dunk"],
        "topic": "sports",
        "creator": "creator-9",
        "duration_ms": 21_000,
        "upload_time": int(time.time() * 1000),
    }
    publish(item_job, b"{not json")  # a bad record on the same topic
    published = time.monotonic()
    publish(item_job, upload)
    row = wait_for_row(job, item_job.log, item_job.db, "new-1", timeout_s=120)
    latency_s = time.monotonic() - published
    print(f"upload -> item_content row readable: {latency_s:.2f} s")

    assert row["item_content_version"] == VERSION
    text = "Insane dunk at the buzzer. basketball, dunk, sports. last second basketball highlights"
    expected = shared_encoder().encode([text])[0]
    # The job may encode it in one padded batch with other uploads: batched and
    # single encodings agree to ~2e-5 (tests/unit of the encoder), not bit for bit.
    np.testing.assert_allclose(row["item_content_embedding"], expected, atol=1e-4)
    sports, cooking = shared_encoder().encode(["sports basketball", "cooking recipe"])
    assert float(expected @ sports) > float(expected @ cooking)  # content carries the topic

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        letters = _letters(item_job.out / "dead_letters")
        if letters:
            break
        time.sleep(0.5)
    assert [(d.reason, d.payload) for d in letters] == [("malformed_json", b"{not json")]
