"""The streaming job: Pub/Sub → features → online store, dead letters kept.

    python -m beam_pipelines.streaming --input_subscription projects/P/subscriptions/S \\
        --dead_letter_dir out/dead_letters [--store_config redis.yaml] [--runner DataflowRunner ...]

Locally it runs on the BundleBasedDirectRunner (named explicitly: left to choose,
Beam tries to download its Prism runner).
"""

from __future__ import annotations

import argparse
import math
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from beam_pipelines.console import configure_logging
from beam_pipelines.direct_runner import freeze_startup_heap
from beam_pipelines.experiments.config import load_experiments_config
from beam_pipelines.jobs_common import embedding_source, store_config
from beam_pipelines.options import (
    LOCAL_STREAMING_RUNNER,
    StreamingOptions,
    add_streaming_arguments,
)
from beam_pipelines.resume import resume_subscription
from beam_pipelines.rewards import load_reward_config
from beam_pipelines.sinks import FeastSinkFactory, WriteDeadLetters
from beam_pipelines.transforms.coengagement import ITEM_PAIR_ROWS, USER_PAIR_ROWS
from beam_pipelines.transforms.experiment_stream import (
    RECORDS,
    USER_EXPERIMENT_ROWS,
    ExperimentMetricRows,
    StreamExperimentMetrics,
)
from beam_pipelines.transforms.graph import (
    ACCEPTED_EVENTS,
    DEAD_LETTERS,
    ITEM_ROWS,
    USER_ROWS,
    ComputeFeatures,
    FeatureSettings,
)
from beam_pipelines.transforms.restore import StateRestore
from beam_pipelines.transforms.retry import RetryPolicy
from beam_pipelines.transforms.windowed_parquet import WriteWindowedParquet
from beam_pipelines.transforms.write import WriteFeatures
from feature_repo.features import (
    EXPERIMENT_METRICS,
    ITEM_COENGAGEMENT,
    ITEM_REALTIME,
    USER_COENGAGEMENT,
    USER_EXPERIMENTS,
    USER_REALTIME,
)

# Each feature output of ComputeFeatures, the view it is written to and the step's
# label (labels are part of a Dataflow job's update compatibility: keep them).
STREAMED_VIEWS = (
    (USER_ROWS, USER_REALTIME, "WriteUsers"),
    (ITEM_ROWS, ITEM_REALTIME, "WriteItems"),
    (USER_PAIR_ROWS, USER_COENGAGEMENT, "WriteUserPairs"),
    (ITEM_PAIR_ROWS, ITEM_COENGAGEMENT, "WriteItemPairs"),
)

EVENT_TS_ATTRIBUTE = "event_ts"
EXPERIMENT_FILES_EVERY_S = 60.0  # --experiment_metrics_dir: a set of files per minute


def sink_factory(options: StreamingOptions) -> FeastSinkFactory:
    return FeastSinkFactory(store_config(options.store_config, options.store_path))


def settings_from(options: StreamingOptions) -> FeatureSettings:
    restore = None
    if options.restore_state:
        # A key's first event cannot be applied before its state is read: while the
        # store is down the stage waits (and holds back the stages before it).
        retry = RetryPolicy(
            options.write_max_retries,
            options.write_backoff_s,
            math.inf,
            max(options.write_backoff_s, 5.0),
        )
        restore = StateRestore(sink_factory(options), retry)
    return FeatureSettings(
        rewards=load_reward_config(options.reward),
        embeddings=embedding_source(options.model_base, options.embedding_refresh_s),
        allowed_lateness_s=options.allowed_lateness_s,
        restore=restore,
    )


class WriteAllFeatures(beam.PTransform):
    """User and item rows to the online store; returns the dead letters of failed writes."""

    def __init__(
        self,
        sink_factory,
        batch_size: int,
        max_retries: int,
        backoff_s: float,
        max_buffering_s: float | None = None,
        retry_budget_s: float = 0.0,
    ):
        super().__init__()
        self._args = (sink_factory,)
        self._kwargs = dict(
            batch_size=batch_size,
            max_retries=max_retries,
            backoff_s=backoff_s,
            max_buffering_s=max_buffering_s,
            retry_budget_s=retry_budget_s,
        )

    def expand(self, features):
        failed = [
            features[tag] | label >> WriteFeatures(*self._args, view, **self._kwargs)
            for tag, view, label in STREAMED_VIEWS
        ]
        return failed | "MergeWriteFailures" >> beam.Flatten()


class ExperimentBranch(beam.PTransform):
    """Accepted events → per-variant, per-day experiment metrics in the online store
    (``experiment_metrics``) and each user's ``user_experiments`` row, and with
    ``--experiment_metrics_dir`` every emitted row to Parquet; returns the dead
    letters of failed writes. ``restore``: as ``FeatureSettings.restore``."""

    def __init__(self, options: StreamingOptions, restore: StateRestore | None = None):
        super().__init__()
        experiments = (
            load_experiments_config(options.experiments_config)
            if options.experiments_config
            else None
        )
        self._metrics = StreamExperimentMetrics(
            load_reward_config(options.reward),
            round(options.experiment_window_s * 1000),
            options.allowed_lateness_s,
            options.experiment_emit_every_s,
            options.experiment_exposure_type,
            experiments=experiments,
            restore=restore,
        )
        self._write = {
            view: WriteFeatures(
                sink_factory(options),
                view,
                options.write_batch_size,
                options.write_max_retries,
                options.write_backoff_s,
                retry_budget_s=options.write_retry_budget_s,
            )
            for view in (EXPERIMENT_METRICS, USER_EXPERIMENTS)
        }
        self._files = None
        if options.experiment_metrics_dir:
            self._files = WriteWindowedParquet(
                options.experiment_metrics_dir, EXPERIMENT_METRICS, EXPERIMENT_FILES_EVERY_S
            )

    def expand(self, accepted):
        metrics = (
            accepted
            | "Events" >> beam.Map(lambda scored: scored.source)
            | "Metrics" >> self._metrics
        )
        rows = metrics[RECORDS] | "Rows" >> ExperimentMetricRows()
        if self._files is not None:
            _ = rows | "WriteParquet" >> self._files
        failed = (
            rows | "Write" >> self._write[EXPERIMENT_METRICS],
            metrics[USER_EXPERIMENT_ROWS] | "WriteUsers" >> self._write[USER_EXPERIMENTS],
        )
        return failed | "MergeWriteFailures" >> beam.Flatten()


def written_views(options: StreamingOptions) -> list[str]:
    """The views whose rows carry keyed state in this job (their progress marks
    decide where a restart resumes)."""
    views = [view for _, view, _ in STREAMED_VIEWS]
    if options.experiment_metrics:
        views += [EXPERIMENT_METRICS, USER_EXPERIMENTS]
    return views


def build(pipeline: beam.Pipeline, options: StreamingOptions) -> None:
    """Wire the stages; ``run`` only adds the runner."""
    source = beam.io.ReadFromPubSub(
        subscription=options.input_subscription,
        topic=options.input_topic,
        timestamp_attribute=EVENT_TS_ATTRIBUTE,
    )
    settings = settings_from(options)
    features = pipeline | "ReadEvents" >> source | "ComputeFeatures" >> ComputeFeatures(settings)
    failed = features | "WriteFeatures" >> WriteAllFeatures(
        sink_factory(options),
        options.write_batch_size,
        options.write_max_retries,
        options.write_backoff_s,
        options.write_max_buffering_s or None,
        options.write_retry_budget_s,
    )
    if options.experiment_metrics:
        experiment = features[ACCEPTED_EVENTS] | "ExperimentMetrics" >> ExperimentBranch(
            options, settings.restore
        )
        failed = (failed, experiment) | "MergeExperimentWriteFailures" >> beam.Flatten()
    (
        (features[DEAD_LETTERS], failed)
        | "AllDeadLetters" >> beam.Flatten()
        | "WriteDeadLetters" >> WriteDeadLetters(options.dead_letter_dir, options.dead_letter_topic)
    )


def pipeline_options(argv: list[str] | None) -> PipelineOptions:
    options = PipelineOptions(argv, save_main_session=False)
    standard = options.view_as(StandardOptions)
    standard.streaming = True
    if not standard.runner:
        standard.runner = LOCAL_STREAMING_RUNNER
    options.view_as(StreamingOptions).validate_streaming()
    return options


def run(argv: list[str] | None = None, wait: bool = True):
    options = pipeline_options(argv)
    local = options.view_as(StandardOptions).runner in (LOCAL_STREAMING_RUNNER, "DirectRunner")
    streaming = options.view_as(StreamingOptions)
    if streaming.restore_state and streaming.input_subscription:
        config = store_config(streaming.store_config, streaming.store_path)
        resume_subscription(
            streaming.input_subscription,
            config,
            streaming.replay_window_s,
            written_views(streaming),
        )
    pipeline = beam.Pipeline(options=options)
    build(pipeline, streaming)
    if local:
        freeze_startup_heap()
    result = pipeline.run()
    if wait:
        result.wait_until_finish()
    return result


BEAM_OPTIONS = f"""\
Apache Beam's pipeline options are accepted too and go to the runner, e.g.:
  --runner R            {LOCAL_STREAMING_RUNNER} (default), DataflowRunner, FlinkRunner, ...
  --project P --region R --temp_location gs://B/tmp --job_name N
  --setup_file ./setup.py --sdk_container_image IMAGE --num_workers N --max_num_workers N
See Beam's pipeline options reference for all of them.
"""


def parser() -> argparse.ArgumentParser:
    """The job's own options, for ``--help`` and usage errors; Beam parses the rest."""
    p = argparse.ArgumentParser(
        prog="rtp stream",
        description=__doc__.split("\n\n")[0],
        epilog=BEAM_OPTIONS,
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the epilog as written
        allow_abbrev=False,  # as Beam's parser: --input is no --input_topic
    )
    add_streaming_arguments(p.add_argument_group("streaming job options"))
    return p


def parse_args(argv: list[str]) -> PipelineOptions:
    """The job's pipeline options; ``--help`` or a bad or missing argument exits 2
    with the usage line (and what is wrong), before Beam is asked to run anything."""
    p = parser()
    p.parse_known_args(argv)  # the rest are Beam's options (or Beam warns about them)
    try:
        return pipeline_options(argv)
    except ValueError as err:
        p.error(str(err))


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    argv = sys.argv[1:] if argv is None else argv
    parse_args(argv)
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
