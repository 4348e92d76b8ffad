"""Local-runner tuning for the streaming job on the DirectRunner.

The DirectRunner's Pub/Sub reader pulls at most 10 messages per bundle, and
every bundle crosses every stage of the graph, so a local streaming job could
apply only tens of events per second. ``raise_pubsub_pull_size`` makes its pulls
take up to ``max_messages`` (whatever is available, without waiting for more).

Live traffic makes many small bundles, and for every bundle of every ParDo the
DirectRunner introspects the DoFn's methods (``inspect.signature`` of each) four
times to find its state and timer specs: a fifth of the job's CPU at 200 events/s.
``cache_dofn_specs`` remembers them per DoFn class (they are class attributes).
After every bundle its watermark monitor also asks each key of each stateful step
for due timers: a pass grows with the number of users and items ever seen,
although only the write batching holds timers. ``skip_timerless_keys`` passes
over keys that have none (same firings, same order).

A stateful DoFn's ``ReadModifyWriteState.write`` also encodes the value at once,
and the next event of the key in the bundle decodes it again, although only the
last value of a bundle is ever committed: encoding the user state was a fifth of
the streaming job's CPU. The SDK harness of the portable runners (Dataflow, Flink)
keeps written values as objects until the bundle commits; ``defer_state_encoding``
does the same here.

None of these changes anything on Dataflow or Flink, which have their own
sources and executors. ``tune_direct_runner`` applies them all.

The local job also runs in one process with everything it imported, and every
element allocates short-lived tuples and dicts, so CPython's cyclic garbage
collector keeps running full collections over a heap of a few hundred thousand
long-lived objects (modules, the pipeline graph): a quarter of the streaming
job's CPU in a profile of the benchmark. ``freeze_startup_heap``, called just
before the pipeline runs, collects once, moves the survivors out of the
collector's sight (``gc.freeze``) and lets the young generation grow larger
before a collection.
"""

from __future__ import annotations

import functools
import gc
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


def cache_dofn_specs() -> bool:
    """Memoize Beam's state/timer spec introspection per DoFn class in this process.

    ``beam.Map``/``FlatMap`` wrappers share one class whose specs depend on the
    wrapped function, so they are not cached. False if Beam's shape changed.
    """
    try:
        from apache_beam.runners.direct import direct_userstate, transform_evaluator
        from apache_beam.transforms import userstate
        from apache_beam.transforms.core import CallableWrapperDoFn
    except ImportError as err:
        LOG.warning("cannot cache DoFn specs: %s", err)
        return False
    original = getattr(userstate.get_dofn_specs, "_rtp_original", userstate.get_dofn_specs)
    cache: dict[type, tuple[frozenset, frozenset]] = {}

    def get_dofn_specs(dofn):
        cls = type(dofn)
        if isinstance(dofn, CallableWrapperDoFn):
            return original(dofn)
        specs = cache.get(cls)
        if specs is None:
            states, timers = original(dofn)
            specs = cache[cls] = (frozenset(states), frozenset(timers))
        return set(specs[0]), set(specs[1])

    get_dofn_specs._rtp_original = original
    userstate.get_dofn_specs = get_dofn_specs  # is_stateful_dofn, validate_stateful_dofn
    transform_evaluator.get_dofn_specs = get_dofn_specs
    # Modules that bound the name at import (direct_userstate goes through userstate).
    assert direct_userstate.userstate is userstate
    return True


def skip_timerless_keys() -> bool:
    """Make the DirectRunner's timer scan skip keys without timers. False if Beam's
    shape changed (then its own scan stays)."""
    try:
        from apache_beam.runners.direct.watermark_manager import TimerFiring, _TransformWatermarks
        from apache_beam.transforms.trigger import InMemoryUnmergedState
    except ImportError as err:
        LOG.warning("cannot speed up the DirectRunner timer scan: %s", err)
        return False
    if not hasattr(InMemoryUnmergedState(), "timers"):
        LOG.warning("cannot speed up the DirectRunner timer scan: keyed state has no .timers")
        return False

    def extract_transform_timers(self):
        # Beam 2.77's _TransformWatermarks.extract_transform_timers, with keys
        # without timers skipped: get_timers would return ([], False) for them.
        with self._lock:
            fired_timers = []
            has_realtime_timer = False
            now = self._clock.time()
            for encoded_key, state in self._keyed_states.items():
                if not state.timers:
                    continue
                timers, had_realtime_timer = state.get_timers(
                    watermark=self._input_watermark, processing_time=now
                )
                has_realtime_timer = has_realtime_timer or had_realtime_timer
                for window, (name, domain, timestamp, tag) in timers:
                    fired_timers.append(
                        TimerFiring(encoded_key, window, name, domain, timestamp, tag)
                    )
            self._fired_timers.update(fired_timers)
            return fired_timers, has_realtime_timer

    _TransformWatermarks.extract_transform_timers = extract_transform_timers
    return True


class _Written:
    """A value written to ReadModifyWriteState in this bundle, not encoded yet."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


def defer_state_encoding() -> bool:
    """Encode a ReadModifyWriteState value when its bundle commits, not at each
    write; reads within the bundle return the object written, as the portable SDK
    harness's state does. False if Beam's shape changed (then Beam's own stays)."""
    try:
        from apache_beam.runners.direct.direct_userstate import (
            DirectUserStateContext,
            ReadModifyWriteRuntimeState,
        )
    except ImportError as err:
        LOG.warning("cannot defer the DirectRunner's state encoding: %s", err)
        return False
    state_cls, context_cls = ReadModifyWriteRuntimeState, DirectUserStateContext
    if getattr(state_cls.write, "_rtp_deferred", False):
        return True
    probe = state_cls(None, None, list)
    if not all(hasattr(probe, a) for a in ("_value", "_cleared", "_modified", "_encode")):
        LOG.warning("cannot defer the DirectRunner's state encoding: its state changed shape")
        return False
    read, commit = state_cls.read, context_cls.commit

    def write(self, value):
        self._cleared = False
        self._modified = True
        self._value = _Written(value)

    def deferred_read(self):
        if isinstance(self._value, _Written):
            return self._value.value
        return read(self)

    def encoding_commit(self):
        for runtime_state in self.cached_states.values():
            if isinstance(runtime_state, state_cls) and isinstance(runtime_state._value, _Written):
                runtime_state._value = [runtime_state._encode(runtime_state._value.value)]
        return commit(self)

    write._rtp_deferred = True
    state_cls.write, state_cls.read, context_cls.commit = write, deferred_read, encoding_commit
    return True


def tune_direct_runner(pull_size: int) -> None:
    """All the local-runner tuning above, for this process."""
    raise_pubsub_pull_size(pull_size)
    cache_dofn_specs()
    skip_timerless_keys()
    defer_state_encoding()


def freeze_startup_heap(young_threshold: int = 10_000) -> None:
    """Collect once, freeze what is alive now and collect the young generation every
    ``young_threshold`` allocations (never less often than CPython's default)."""
    if young_threshold < 1:
        raise ValueError(f"young_threshold must be >= 1, got {young_threshold}")
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, young_threshold), middle, old)


def _pull(pull, pull_size: int, *args, **kwargs):
    # Not named max_messages: Beam passes max_messages=10 as a keyword, which would
    # clash with this bound positional argument (TypeError on every pull).
    kwargs["max_messages"] = max(kwargs.get("max_messages", 0), pull_size)
    return pull(*args, **kwargs)
