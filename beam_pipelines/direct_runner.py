"""Local-runner tuning for the streaming job on the DirectRunner.

The DirectRunner's Pub/Sub reader pulls at most 10 messages per bundle, and
every bundle crosses every stage of the graph, so a local streaming job could
apply only tens of events per second. ``raise_pubsub_pull_size`` makes its pulls
take up to ``max_messages`` (whatever is available, without waiting for more).
It changes nothing on Dataflow or Flink, whose Pub/Sub sources are their own.
"""

from __future__ import annotations

import functools
import logging

LOG = logging.getLogger(__name__)


def raise_pubsub_pull_size(max_messages: int) -> bool:
    """Patch the DirectRunner's Pub/Sub reader in this process; False if its shape changed."""
    if max_messages < 1:
        raise ValueError(f"max_messages must be >= 1, got {max_messages}")
    try:
        from apache_beam.runners.direct.transform_evaluator import _PubSubReadEvaluator

        original = _PubSubReadEvaluator._get_subscriber_client.__func__
    except (ImportError, AttributeError) as err:  # a Beam upgrade moved it: keep Beam's default
        LOG.warning("cannot raise the DirectRunner Pub/Sub pull size: %s", err)
        return False

    def get_client(cls, transform):
        client = original(cls, transform)
        if not getattr(client, "_rtp_pull_size", None):
            client.pull = functools.partial(_pull, client.pull, max_messages)
            client._rtp_pull_size = max_messages
        return client

    _PubSubReadEvaluator._get_subscriber_client = classmethod(get_client)
    return True


def _pull(pull, pull_size: int, *args, **kwargs):
    # Not named max_messages: Beam passes max_messages=10 as a keyword, which would
    # clash with this bound positional argument (TypeError on every pull).
    kwargs["max_messages"] = max(kwargs.get("max_messages", 0), pull_size)
    return pull(*args, **kwargs)
