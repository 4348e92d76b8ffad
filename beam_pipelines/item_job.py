"""The item pipeline: item metadata → content embeddings → the ``item_content``
view and the item table, bad records dead-lettered.

    rtp items --items movies.csv|items.jsonl --out DIR [--online [--store_path DB]]
    rtp items --input_subscription projects/P/subscriptions/S --out DIR [--store_config YAML]

Batch (``--items``): a MovieLens ``movies.csv`` or a JSONL catalogue (the
simulator's ``items.jsonl``), on Beam's FnApiRunner; ``--online`` also writes
the ``item_content`` rows to the online store. Streaming (``--input_subscription``
or ``--input_topic``): JSON item metadata as published on upload (see
``beam_pipelines.items``), on the BundleBasedDirectRunner unless ``--runner``
says otherwise; rows always go online, so a new item is retrievable by content
seconds after upload. Either way ``<out>/items/*.parquet`` is the item table
(metadata, ``content_embedding``, ``content_version``) and
``<out>/dead_letters/*.jsonl`` the rejected records with their reason.
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import sys
import time
from typing import Any

import apache_beam as beam
from apache_beam import coders
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from beam_pipelines.console import configure_logging
from beam_pipelines.content.encoder import DEFAULT_TEXT_ENCODER
from beam_pipelines.items import movielens_line_to_json
from beam_pipelines.jobs_common import add_store_arguments, store_config
from beam_pipelines.options import LOCAL_STREAMING_RUNNER
from beam_pipelines.sinks import FeastSinkFactory, WriteDeadLetters
from beam_pipelines.transforms.dead_letters import DEAD_LETTER
from beam_pipelines.transforms.items import (
    EMBEDDED,
    ITEMS,
    ContentModelHandler,
    EmbedItems,
    ParseItems,
    WriteItemTable,
    content_row,
    item_table_record,
)
from beam_pipelines.transforms.write import WriteFeatures
from feature_repo.features import ITEM_CONTENT


class ReadCatalog(beam.PTransform):
    """A catalogue file as item messages (JSON bytes): ``.csv`` is MovieLens
    ``movies.csv`` (header skipped), anything else JSON lines."""

    def __init__(self, path: str):
        super().__init__()
        self._path = path

    def expand(self, pipeline):
        movielens = self._path.endswith(".csv")
        lines = pipeline | "ReadLines" >> beam.io.ReadFromText(
            self._path, coder=coders.BytesCoder(), skip_header_lines=1 if movielens else 0
        )
        if movielens:
            lines = lines | "MovieLensToJson" >> beam.Map(movielens_line_to_json)
        return lines | "DropBlank" >> beam.Filter(lambda line: bool(line.strip()))


class EncodeItems(beam.PTransform):
    """Item messages → content rows online (optional), the item table and dead
    letters; returns nothing (every output is written)."""

    def __init__(self, args: argparse.Namespace, online: bool):
        super().__init__()
        self._args = args
        self._online = online

    def expand(self, messages):
        args = self._args
        parsed = messages | "ParseItems" >> ParseItems()
        handler = ContentModelHandler(args.encoder, max_batch_size=args.batch_size)
        embedded = parsed[ITEMS] | "EmbedItems" >> EmbedItems(handler)
        results = embedded[EMBEDDED]
        out = pathlib.Path(args.out)
        letters = [parsed[DEAD_LETTER], embedded[DEAD_LETTER]]
        if self._online:
            sink = FeastSinkFactory(store_config(args.store_config, args.store_path))
            letters.append(
                results
                | "ContentRows" >> beam.Map(content_row)
                | "WriteContent" >> WriteFeatures(sink, ITEM_CONTENT, batch_size=args.batch_size)
            )
        (
            results
            | "ItemRecords" >> beam.Map(item_table_record)
            | "WriteItemTable" >> WriteItemTable(str(out / "items"))
        )
        (
            letters
            | "AllDeadLetters" >> beam.Flatten()
            | "WriteDeadLetters" >> WriteDeadLetters(str(out / "dead_letters"))
        )
        return beam.pvalue.PDone(messages.pipeline)


def run_batch(args: argparse.Namespace) -> dict[str, Any]:
    """Encode a catalogue file; returns (and writes ``<out>/summary.json``) counts."""
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    out = pathlib.Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    pipeline = beam.Pipeline(runner=FnApiRunner())
    (
        pipeline
        | "ReadCatalog" >> ReadCatalog(args.items)
        | "EncodeItems" >> EncodeItems(args, online=args.online)
    )
    result = pipeline.run()
    result.wait_until_finish()
    seconds = time.perf_counter() - started
    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_namespace("rtp"))["counters"]
    }
    valid = counters.get("items_valid", 0)
    summary = {
        "items": args.items,
        "encoder": args.encoder,
        "items_valid": valid,
        "items_invalid": counters.get("items_invalid", 0),
        "content_rows_written": counters.get(f"rows_written_{ITEM_CONTENT}", 0),
        "seconds": round(seconds, 2),
        "items_per_s": round(valid / seconds, 1) if seconds else None,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def run_streaming(args: argparse.Namespace, beam_args: list[str], wait: bool = True):
    options = PipelineOptions(beam_args, save_main_session=False)
    standard = options.view_as(StandardOptions)
    standard.streaming = True
    standard.runner = standard.runner or LOCAL_STREAMING_RUNNER
    pipeline = beam.Pipeline(options=options)
    source = beam.io.ReadFromPubSub(subscription=args.input_subscription, topic=args.input_topic)
    (pipeline | "ReadItems" >> source | "EncodeItems" >> EncodeItems(args, online=True))
    result = pipeline.run()
    if wait:
        result.wait_until_finish()
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rtp items",
        description=__doc__.split("\n\n")[0],
        allow_abbrev=False,
        epilog="In streaming mode Beam's pipeline options (--runner, --project, ...) "
        "are accepted too and go to the runner.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--items", help="Catalogue: MovieLens movies.csv or items JSONL.")
    source.add_argument("--input_subscription", help="Pub/Sub subscription of item metadata.")
    source.add_argument("--input_topic", help="Pub/Sub topic (a temporary subscription is made).")
    p.add_argument("--out", required=True, help="Directory: items/*.parquet, dead_letters/.")
    p.add_argument(
        "--online", action="store_true", help="Batch: also write item_content rows online."
    )
    add_store_arguments(p, others="rtp stream and rtp serve")
    p.add_argument(
        "--encoder",
        default=DEFAULT_TEXT_ENCODER,
        help=f"Content encoder name or 'module:Factory' (default: {DEFAULT_TEXT_ENCODER}).",
    )
    p.add_argument("--batch_size", type=int, default=64, help="Items per encoder call.")
    return p


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The job's arguments and the rest (Beam's options, streaming only); usage
    errors exit 2 before anything runs."""
    p = parser()
    args, rest = p.parse_known_args(argv)
    if args.batch_size < 1:
        p.error("--batch_size must be >= 1")
    if args.items:
        if rest:
            p.error(f"unrecognized arguments: {' '.join(rest)}")
        if not pathlib.Path(args.items).is_file():
            p.error(f"--items {args.items}: no such file")
    return args, rest


def main(argv: list[str] | None = None) -> int:
    configure_logging(level=logging.WARNING)
    argv = sys.argv[1:] if argv is None else argv
    args, beam_args = parse_args(argv)
    if args.items:
        print(json.dumps(run_batch(args), indent=2))
    else:
        run_streaming(args, beam_args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
