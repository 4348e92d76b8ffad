"""Where a restarted streaming job picks up its Pub/Sub subscription.

Why a seek: Beam's Pub/Sub sources acknowledge a message once the runner holds
it (the DirectRunner as it pulls, Dataflow when the read stage commits), not
when its feature rows reach the online store, so the messages in flight when a
job is killed are acknowledged and lost to a plain restart. Each write stage
records in the store when its last successful flush began (its *progress mark*,
``transforms.restore.progress_key``); on start the job seeks its subscription
back to the oldest mark minus ``replay_window_s``, and Pub/Sub delivers again
every message published since (the subscription must retain acknowledged
messages: ``retain_acked_messages``). The keyed state restored from the store
holds the ids each key applied, so the replayed messages already applied are
dead-lettered ``duplicate`` (or ``late``, when beyond the allowed lateness)
and never applied twice.

The guarantee (README, "Restarts"): a message is replayed if it was published
at most ``replay_window_s`` before the progress mark of the slowest view, which
holds for every message in flight when the window exceeds the time from
publication to the store write. Progress marks are per view, not per job: two
jobs writing one store share them (and replay more, never less).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime

from beam_pipelines.transforms.restore import STAGES, progress_key
from feature_repo.features import ENCODED_STATE, KEYED_STATE

LOG = logging.getLogger(__name__)


def progress_marks(store, views: Iterable[str] = tuple(STAGES)) -> dict[str, int]:
    """Each of ``views``' progress mark (epoch ms) found in ``store`` (``read_bytes``):
    the views the starting job writes, so that a view an earlier job wrote and this
    one does not (``--experiment_metrics`` turned off) holds nothing back."""
    keys = {progress_key(view): view for view in views}
    found = store.read_bytes(KEYED_STATE, ENCODED_STATE, list(keys))
    return {keys[key]: int(data.decode()) for key, data in found.items()}


def resume_point_ms(marks: Iterable[int], replay_window_s: float) -> int:
    """Seek time (epoch ms): the oldest mark minus the window; 0 (everything the
    subscription retains) when no write ever succeeded."""
    marks = list(marks)
    if not marks:
        return 0
    return max(min(marks) - int(replay_window_s * 1000), 0)


def seek_subscription(subscription: str, time_ms: int) -> bool:
    """Seek ``subscription`` to ``time_ms``; False (with a warning) if it does not
    retain acknowledged messages, so the seek could not bring them back."""
    from google.cloud import pubsub_v1
    from google.protobuf import timestamp_pb2

    client = pubsub_v1.SubscriberClient()
    try:
        retains = client.get_subscription(subscription=subscription).retain_acked_messages
        if not retains:
            LOG.warning(
                "%s does not retain acknowledged messages: a restart cannot replay the "
                "messages in flight when the job stopped (set retain_acked_messages)",
                subscription,
            )
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(datetime.fromtimestamp(time_ms / 1000, tz=UTC))
        client.seek(request={"subscription": subscription, "time": stamp})
    finally:
        client.close()
    return retains


def resume_subscription(
    subscription: str,
    store_config: dict,
    replay_window_s: float,
    views: Iterable[str] = tuple(STAGES),
) -> int:
    """Seek ``subscription`` back to the stored progress of ``views``; returns the
    seek time (ms)."""
    from feature_repo.store import FeatureStoreClient

    with FeatureStoreClient(store_config) as store:
        marks = progress_marks(store, views)
    at_ms = resume_point_ms(marks.values(), replay_window_s)
    seek_subscription(subscription, at_ms)
    LOG.info("resumed %s at %d ms (progress marks %s)", subscription, at_ms, marks)
    return at_ms
