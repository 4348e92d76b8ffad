"""The streaming graph as the DataflowRunner sees it, built offline.

No credentials and no network: ``--dry_run`` also stops the option validation
from asking GCS about the temp bucket's soft-delete policy at ``Pipeline()``
construction, which it does for any gs:// temp_location otherwise.
"""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.portability.api import beam_runner_api_pb2

from beam_pipelines import streaming
from beam_pipelines.options import StreamingOptions

REPO = Path(__file__).resolve().parents[2]
PROJECT = "rtp-test-project"
DATAFLOW_ARGS = [
    "--runner=DataflowRunner",
    f"--project={PROJECT}",
    "--region=europe-west1",
    "--temp_location=gs://rtp-test-bucket/tmp",
    "--staging_location=gs://rtp-test-bucket/staging",
    "--streaming",
    "--enable_streaming_engine",
    "--dry_run=True",
    "--no_auth",
    "--sdk_location=container",
    "--sdk_container_image=europe-west1-docker.pkg.dev/rtp-test-project/rtp/rtp-dataflow:test",
    f"--input_subscription=projects/{PROJECT}/subscriptions/engagement-events-pipeline",
    f"--dead_letter_topic=projects/{PROJECT}/topics/engagement-dead-letters",
    "--store_config=" + str(REPO / "infra" / "local" / "store.redis.yaml"),
    # Batched writes (GroupIntoBatches), so their stateful steps are pinned too.
    "--write_max_buffering_s=0.5",
]

# The steps that hold keyed state, with their state and timer names. A Dataflow
# --update maps state by these step names: renaming one (a label in
# beam_pipelines/transforms/graph.py or streaming.py, or a DoFn class behind an
# unlabelled ParDo) needs a --transform-name-mappings entry (infra/README.md).
STATEFUL_STEPS = {
    "ComputeFeatures/UpdateUserState/ApplyEvents/ParDo(_UserStateFn)": ({"user_state"}, set()),
    "ComputeFeatures/UpdateItemState/ApplyEvents": ({"item_state"}, set()),
    "ComputeFeatures/UpdateCoEngagement/PairWindows/ParDo(_WindowFn)": ({"pair_window"}, set()),
    "ComputeFeatures/UpdateCoEngagement/Neighbours": ({"neighbours"}, set()),
    # GroupIntoBatches before each store write (--write_max_buffering_s).
    "WriteFeatures/WriteUsers/GatherBatches/ParDo(_GroupIntoBatchesDoFn)": (
        {"count", "values"},
        {"ts-buffering_end", "ts-window_end"},
    ),
    "WriteFeatures/WriteItems/GatherBatches/ParDo(_GroupIntoBatchesDoFn)": (
        {"count", "values"},
        {"ts-buffering_end", "ts-window_end"},
    ),
    "WriteFeatures/WriteUserPairs/GatherBatches/ParDo(_GroupIntoBatchesDoFn)": (
        {"count", "values"},
        {"ts-buffering_end", "ts-window_end"},
    ),
    "WriteFeatures/WriteItemPairs/GatherBatches/ParDo(_GroupIntoBatchesDoFn)": (
        {"count", "values"},
        {"ts-buffering_end", "ts-window_end"},
    ),
}

EXPECTED_STEPS = {
    "ReadEvents",
    "ComputeFeatures/ParseEvents/Validate",
    "ComputeFeatures/ComputeRewards/Score",
    "ComputeFeatures/UpdateUserState",
    "ComputeFeatures/UpdateItemState",
    "ComputeFeatures/MergeDeadLetters",
    "WriteFeatures/WriteUsers/WriteBatches",
    "WriteFeatures/WriteItems/WriteBatches",
    "AllDeadLetters",
    "WriteDeadLetters/ToPubSub",
}


def dataflow_pipeline(extra: list[str] | None = None) -> beam.Pipeline:
    options = streaming.pipeline_options([*DATAFLOW_ARGS, *(extra or [])])
    pipeline = beam.Pipeline(options=options)
    streaming.build(pipeline, options.view_as(StreamingOptions))
    return pipeline


@pytest.fixture(scope="module")
def proto() -> beam_runner_api_pb2.Pipeline:
    return dataflow_pipeline().to_runner_api()


def stateful_steps(proto: beam_runner_api_pb2.Pipeline) -> dict[str, tuple[set, set]]:
    found = {}
    for transform in proto.components.transforms.values():
        if transform.spec.urn != "beam:transform:pardo:v1":
            continue
        payload = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload)
        if payload.state_specs or payload.timer_family_specs:
            found[transform.unique_name] = (
                set(payload.state_specs),
                set(payload.timer_family_specs),
            )
    return found


def test_streaming_graph_builds_with_dataflow_options(proto) -> None:
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert names >= EXPECTED_STEPS, sorted(EXPECTED_STEPS - names)
    unbounded = [
        p.unique_name
        for p in proto.components.pcollections.values()
        if p.is_bounded == beam_runner_api_pb2.IsBounded.UNBOUNDED
    ]
    assert unbounded, "the Pub/Sub read must make the graph unbounded (streaming)"


def test_stateful_steps_keep_their_names(proto) -> None:
    assert stateful_steps(proto) == STATEFUL_STEPS, (
        "A stateful step was renamed or added: a running job can only be --update'd "
        "with a --transform-name-mappings entry (infra/README.md, 'Update and drain'); "
        "then update STATEFUL_STEPS here and the README's table."
    )


def test_readme_lists_the_stateful_steps() -> None:
    readme = (REPO / "infra" / "README.md").read_text()
    for name in STATEFUL_STEPS:
        assert f"`{name}`" in readme, f"infra/README.md does not name the stateful step {name}"


def test_dataflow_dry_run_makes_a_streaming_job_with_the_setup_file() -> None:
    """DataflowRunner's own translation, stopped before any API call (--dry_run):
    overrides, runner v2 proto, streaming job type, and the --setup_file sdist
    built from setup.py and staged for the workers."""
    pipeline = dataflow_pipeline([f"--setup_file={REPO / 'setup.py'}"])
    result = pipeline.run()
    assert result.job.proto.type.name == "JOB_TYPE_STREAMING"
    staged = [
        beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(d.role_payload).staged_name
        for env in pipeline.runner.proto_pipeline.components.environments.values()
        for d in env.dependencies
    ]
    assert "workflow.tar.gz" in staged, staged  # the sdist of setup.py


def test_experiment_metrics_add_two_stateful_steps_only_when_asked() -> None:
    proto = dataflow_pipeline(["--experiment_metrics=true"]).to_runner_api()
    added = {k: v for k, v in stateful_steps(proto).items() if k not in STATEFUL_STEPS}
    assert added == {
        "ExperimentMetrics/Metrics/UserSums/ParDo(_UserSumsFn)": (
            {"experiment_user_sums"},
            {"ts-experiment_cleanup"},
        ),
        "ExperimentMetrics/Metrics/GroupSums": (
            {"experiment_group_sums", "experiment_applied_ids", "experiment_emit_pending"},
            {"ts-experiment_emit", "ts-experiment_final"},
        ),
    }


def test_experiment_files_add_a_parquet_write_and_no_stateful_step() -> None:
    proto = dataflow_pipeline(
        ["--experiment_metrics=true", "--experiment_metrics_dir=gs://bucket/experiments"]
    ).to_runner_api()
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert "ExperimentMetrics/WriteParquet/WriteFiles" in names
    added = {k for k in stateful_steps(proto) if k not in STATEFUL_STEPS}
    assert all(k.startswith("ExperimentMetrics/Metrics/") for k in added), added


def test_experiment_files_need_experiment_metrics() -> None:
    with pytest.raises(ValueError, match="--experiment_metrics_dir needs"):
        dataflow_pipeline(["--experiment_metrics_dir=gs://bucket/experiments"])
