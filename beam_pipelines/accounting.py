"""Accounting of a feature pipeline's run: every published message applied exactly
once or dead-lettered exactly once with its reason, never both, never neither.

This is the invariant that holds for any delivery order. Which of the two an event
gets may depend on delivery order (the per-user lateness rule applies an event
that arrives before its user's newer ones and dead-letters it ``late`` after
them), so checks assert this invariant, not one arrival order's outcome.

The check works per event from what a run leaves behind:

- the published messages (raw bytes, as sent);
- the dead letters (``DeadLetter``): ``late``/``duplicate`` ones carry the
  ``event_id``, validation ones carry the raw bytes as their payload;
- each user's applied-event count in the online store (``user_event_count``).

A valid message is keyed by ``(user_id, event_id)``: of its ``copies`` published
messages each must be dead-lettered, except at most one, which must be applied.
A ``duplicate`` letter says an earlier copy was applied. The applied keys of a
user must equal that user's count in the store: more is an event applied twice (or applied and
dead-lettered), fewer is an event neither applied nor dead-lettered. An invalid
message must have exactly one validation letter with its bytes. Letters beyond a
message's published copies are redeliveries by the bus (Pub/Sub delivers at
least once), dead-lettered like any copy; they are reported, not errors.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from beam_pipelines.events import EventValidationError, ValidationConfig, parse_event
from beam_pipelines.transforms.dead_letters import DeadLetter

# Letters decided by the state stage, keyed by event id (the rest by raw bytes).
_STATE_REASONS = frozenset({"late", "duplicate"})


@dataclasses.dataclass
class Accounting:
    """Outcome of ``account``. ``applied``: events in the store (sum of the users'
    counts); ``unaccounted``: messages neither applied nor dead-lettered (so far);
    ``counted_twice``: events applied twice, or applied and dead-lettered;
    ``redelivered``: dead letters beyond a message's published copies."""

    published: int = 0
    valid: int = 0
    distinct_events: int = 0
    applied: int = 0
    dead_lettered_by_reason: collections.Counter[str] = dataclasses.field(
        default_factory=collections.Counter
    )
    unaccounted: int = 0
    counted_twice: int = 0
    redelivered: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)
    applied_keys: set[tuple[str, str]] = dataclasses.field(default_factory=set, repr=False)

    @property
    def dead_lettered(self) -> int:
        return sum(self.dead_lettered_by_reason.values())

    @property
    def holds(self) -> bool:
        """Every message applied once or dead-lettered once, none both, none neither."""
        return not (self.unaccounted or self.counted_twice or self.problems)

    def to_dict(self) -> dict[str, Any]:
        return {
            "published": self.published,
            "applied": self.applied,
            "dead_lettered": self.dead_lettered,
            "dead_lettered_by_reason": dict(sorted(self.dead_lettered_by_reason.items())),
            "redelivered_by_the_bus": self.redelivered,
            "unaccounted": self.unaccounted,
            "counted_twice": self.counted_twice,
        }

    def line(self) -> str:
        """One line: published = applied + dead-lettered (by reason)."""
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.dead_lettered_by_reason.items()))
        text = (
            f"published {self.published} = applied {self.applied} + dead-lettered "
            f"{self.dead_lettered - self.redelivered} ({reasons or 'none'})"
        )
        if self.redelivered:
            text += f"; {self.redelivered} bus redeliveries also dead-lettered"
        if not self.holds:
            text += f"; UNACCOUNTED {self.unaccounted}, COUNTED TWICE {self.counted_twice}"
        return text


def _user_of(letter: DeadLetter) -> str | None:
    try:
        return json.loads(letter.payload).get("user_id")
    except (ValueError, AttributeError):
        return None


class Ledger:
    """The published messages, parsed once; ``check`` accounts for them against
    the letters and store counts of a moment (call it as often as needed).
    ``config``: the job's validation config."""

    def __init__(self, config: ValidationConfig | None = None):
        self._config = config or ValidationConfig()
        self.published = 0
        self.valid = 0
        self.copies: collections.Counter[tuple[str, str]] = collections.Counter()
        self.invalid: collections.Counter[bytes] = collections.Counter()
        self._user_of_id: dict[str, str] = {}

    def add(self, messages: Iterable[bytes]) -> Ledger:
        for data in messages:
            self.published += 1
            try:
                event = parse_event(data, self._config)
            except EventValidationError:
                self.invalid[bytes(data)] += 1
                continue
            self.valid += 1
            self.copies[(event.user_id, event.event_id)] += 1
            self._user_of_id.setdefault(event.event_id, event.user_id)
        return self

    @property
    def users(self) -> list[str]:
        """Every user with a valid message: the store rows to read."""
        return sorted({user for user, _ in self.copies})

    def check(
        self, letters: Iterable[DeadLetter], applied_by_user: Mapping[str, int]
    ) -> Accounting:
        """``applied_by_user``: each user's ``user_event_count`` in the store (0 or
        absent for a user with no row)."""
        result = Accounting(
            published=self.published, valid=self.valid, distinct_events=len(self.copies)
        )
        by_key: dict[tuple[str, str], collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        by_payload: collections.Counter[bytes] = collections.Counter()
        for letter in letters:
            result.dead_lettered_by_reason[letter.reason] += 1
            if letter.reason in _STATE_REASONS and letter.event_id is not None:
                user = _user_of(letter) or self._user_of_id.get(letter.event_id, "")
                by_key[(user, letter.event_id)][letter.reason] += 1
            else:
                by_payload[bytes(letter.payload)] += 1

        for payload, n in self.invalid.items():
            got = by_payload.pop(payload, 0)
            result.unaccounted += max(n - got, 0)
            result.redelivered += max(got - n, 0)
        if by_payload:
            n = sum(by_payload.values())
            result.problems.append(f"{n} dead letters of messages never published or not parsed")

        expected_by_user: collections.Counter[str] = collections.Counter()
        for key, n in self.copies.items():
            reasons = by_key.pop(key, collections.Counter())
            lettered = sum(reasons.values())
            # A 'duplicate' letter says a copy was applied before it.
            if lettered < n or reasons["duplicate"]:
                expected_by_user[key[0]] += 1
                result.applied_keys.add(key)
                result.unaccounted += max(n - 1 - lettered, 0)  # one copy applied, at most
                result.redelivered += max(lettered - (n - 1), 0)
            else:
                result.redelivered += lettered - n
        if by_key:
            result.problems.append(
                f"{len(by_key)} letters of events never published: {list(by_key)[:3]}"
            )

        for user in set(expected_by_user) | set(applied_by_user):
            got, want = applied_by_user.get(user) or 0, expected_by_user.get(user, 0)
            result.applied += got
            result.counted_twice += max(got - want, 0)
            result.unaccounted += max(want - got, 0)
        return result


def account(
    messages: Iterable[bytes],
    letters: Iterable[DeadLetter],
    applied_by_user: Mapping[str, int],
    config: ValidationConfig | None = None,
) -> Accounting:
    """``Ledger(config).add(messages).check(letters, applied_by_user)``."""
    return Ledger(config).add(messages).check(letters, applied_by_user)


def letters_in(paths: Sequence[Any]) -> list[DeadLetter] | None:
    """Dead letters of JSONL files; None while a line is half written."""
    letters = []
    try:
        for path in paths:
            letters += [DeadLetter.from_json(x) for x in path.read_bytes().splitlines() if x]
    except ValueError:
        return None
    return letters
