"""Command-line options of the streaming job, as a PipelineOptions subclass.

Every option here is a Dataflow Flex Template parameter too (infra/): the same
command line runs on the DirectRunner and, by ``--runner`` and GCP flags, on
Dataflow or Flink.
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipelines.experiments.attribution import EXPOSURE_TYPE
from feature_repo.store import DEFAULT_SQLITE_PATH

LOCAL_STREAMING_RUNNER = "BundleBasedDirectRunner"


def add_streaming_arguments(parser) -> None:
    """The job's own options on ``parser`` (an ``ArgumentParser`` or a group of one):
    Beam's through ``StreamingOptions``, ``rtp stream --help``'s directly."""
    add = parser.add_argument
    add("--input_subscription", help="Pub/Sub subscription: projects/P/subscriptions/S.")
    add(
        "--input_topic",
        help="Pub/Sub topic (a temporary subscription is made): projects/P/topics/T.",
    )
    add("--dead_letter_topic", help="Pub/Sub topic for dead letters (JSON, payload base64).")
    add("--dead_letter_dir", help="Directory (local or gs://) for dead-letter JSONL files.")
    add(
        "--store_config",
        help="Online store YAML (feature_repo.store); default: embedded SQLite.",
    )
    add(
        "--store_path",
        default=DEFAULT_SQLITE_PATH,
        help=f"SQLite online store when --store_config is not given (default: "
        f"{DEFAULT_SQLITE_PATH}, as rtp backfill --online and rtp serve).",
    )
    add("--reward", default="short_video", help="Reward preset name or YAML path.")
    add(
        "--allowed_lateness_s",
        type=float,
        default=600.0,
        help="Seconds an event may lag its user's newest event; later ones: dead letter 'late'",
    )
    add(
        "--model_base",
        help="Model base path; item embeddings from its newest table, else hashed vectors.",
    )
    add(
        "--embedding_refresh_s",
        type=float,
        default=60.0,
        help="Seconds between checks for a newer item-embedding table.",
    )
    add("--write_batch_size", type=int, default=500, help="Rows per online-store write.")
    add(
        "--write_max_buffering_s",
        type=float,
        default=0.0,
        help="Longest a feature row waits to join a write batch, seconds; 0 writes each "
        "bundle's rows at the end of the bundle (lowest latency).",
    )
    add("--write_max_retries", type=int, default=3, help="Retries of a failed store write.")
    add(
        "--write_backoff_s",
        type=float,
        default=0.2,
        help="First retry delay, seconds (doubles, up to 5 s).",
    )
    add(
        "--write_retry_budget_s",
        type=float,
        default=120.0,
        help="Seconds a failing store write (or state read) keeps being retried before its "
        "rows become dead letters 'store_write_failed' (rtp replay-dead-letters).",
    )
    add(
        "--restore_state",
        type=boolean,
        default="true",  # argparse converts a str default with ``type``
        metavar="{true,false}",
        help="Resume each key's state from the online store at its first event, and on "
        "start seek --input_subscription back to the store's progress mark minus "
        "--replay_window_s (default: true).",
    )
    add(
        "--replay_window_s",
        type=float,
        default=300.0,
        help="Seconds before the last stored write that a restart replays: at least the "
        "longest time from a message's publication to its rows reaching the store.",
    )

    add(
        "--experiment_metrics",
        type=boolean,
        default="false",
        metavar="{true,false}",
        help="Also keep per-variant, per-day experiment metrics of the accepted events "
        "(logged exposures and the engagements attributed to them) and write them to the "
        "experiment_metrics view (default: false).",
    )
    add(
        "--experiment_window_s",
        type=float,
        default=86400.0,
        help="Attribution window of --experiment_metrics, seconds (default 86400: 24 h).",
    )
    add(
        "--experiment_emit_every_s",
        type=float,
        default=10.0,
        help="Longest a changed experiment group waits for its row, seconds of processing time.",
    )
    add(
        "--experiment_exposure_type",
        default=EXPOSURE_TYPE,
        help=f"Event type of a logged exposure (default {EXPOSURE_TYPE}).",
    )
    add(
        "--experiments_config",
        help="Experiments YAML: the configured shares and controls of --experiment_metrics' "
        "SRM p-values and lifts (default: equal shares, control named control).",
    )
    add(
        "--experiment_metrics_dir",
        help="Directory (local or gs://) where --experiment_metrics also writes every emitted "
        "row as Parquet, one set of files per minute of the rows' computation time.",
    )


def boolean(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false"):
        raise ValueError(f"expected true or false, got {text!r}")
    return value == "true"


class StreamingOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        add_streaming_arguments(parser)

    def validate_streaming(self) -> None:
        """Errors name the argument; called before the pipeline is built."""
        if bool(self.input_subscription) == bool(self.input_topic):
            raise ValueError("give exactly one of --input_subscription or --input_topic")
        if not self.dead_letter_topic and not self.dead_letter_dir:
            raise ValueError(
                "give --dead_letter_topic and/or --dead_letter_dir: dead letters need a home"
            )
        for name in (
            "allowed_lateness_s",
            "write_max_retries",
            "write_backoff_s",
            "write_max_buffering_s",
            "write_retry_budget_s",
            "replay_window_s",
            "experiment_window_s",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0")
        if self.experiment_metrics_dir and not self.experiment_metrics:
            raise ValueError("--experiment_metrics_dir needs --experiment_metrics=true")
        for name in ("embedding_refresh_s", "write_batch_size", "experiment_emit_every_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name} must be > 0")
