"""The simulated catalogue: items, their topics, titles, latent quality and
popularity that rises and decays after release."""

from __future__ import annotations

import bisect
import collections
import math
from typing import NamedTuple

import numpy as np

from rtp.simulator.config import DAY_MS, HOUR_MS, SimulatorConfig
from rtp.simulator.randomness import Draws
from rtp.simulator.records import ItemInfo

_VOCABULARY_TEXT = {
    "cooking": "recipe pasta kitchen chef baking spicy dinner dessert",
    "fitness": "workout gym squat cardio protein stretch abs running",
    "gaming": "gameplay speedrun boss console esports minecraft loot controller",
    "music": "guitar cover beat singing piano remix concert lyrics",
    "dance": "choreo dance moves ballet hiphop routine groove salsa",
    "comedy": "prank sketch standup joke parody skit bloopers roast",
    "pets": "puppy kitten dog cat parrot hamster grooming paws",
    "travel": "beach roadtrip hotel backpacking island flight passport itinerary",
    "fashion": "outfit streetwear thrift sneakers lookbook denim runway haul",
    "beauty": "makeup skincare lipstick contour nails serum eyeliner glow",
    "tech": "smartphone laptop unboxing gadget coding keyboard chip ai",
    "diy": "woodworking crafts repair upcycle glue drill shelf workbench",
    "sports": "football basketball goal dunk tennis highlights stadium referee",
    "cars": "supercar engine horsepower detailing turbo racing garage exhaust",
    "science": "experiment physics chemistry space rocket telescope molecule lab",
    "finance": "stocks budget investing crypto savings taxes dividends mortgage",
    "art": "painting sketching canvas watercolor sculpture mural portrait charcoal",
    "nature": "forest waterfall wildlife mountain sunset birds river camping",
    "parenting": "toddler baby mom dad nursery bedtime lunchbox homeschool",
    "movies": "trailer scene actor cinema oscars sequel spoilers plot",
}
TOPIC_VOCABULARY: dict[str, tuple[str, ...]] = {
    name: tuple(words.split()) for name, words in _VOCABULARY_TEXT.items()
}
# Words that carry no topic signal, as in real titles.
FILLER_WORDS = (
    "pov:",
    "best",
    "new",
    "daily",
    "quick",
    "part 2",
    "wait for it",
    "#fyp",
    "must see",
    "day 1",
)


def topic_names(n_topics: int) -> list[str]:
    """The first names come from ``TOPIC_VOCABULARY``; extra topics are ``topicNN``."""
    names = list(TOPIC_VOCABULARY)[:n_topics]
    return names + [f"topic{t:02d}" for t in range(len(names), n_topics)]


def _vocabulary(name: str) -> tuple[str, ...]:
    return TOPIC_VOCABULARY.get(name) or tuple(f"{name}w{j}" for j in range(8))


def _title(draws: Draws, words: tuple[str, ...]) -> str:
    picked = [words[j] for j in draws.rng.permutation(len(words))[: 2 + draws.below(2)]]
    if draws.uniform() < 0.6:
        picked.insert(draws.below(len(picked) + 1), draws.choice(FILLER_WORDS))
    return " ".join(picked)


def sample_cumulative(cum: list[float], u: float) -> int:
    """Index drawn with weights whose running sum is ``cum``, for a uniform ``u``."""
    return min(bisect.bisect_right(cum, u * cum[-1]), len(cum) - 1)


class _PopTable(NamedTuple):
    everywhere: list[float]  # cumulative popularity over all items
    by_topic: list[list[float]]  # cumulative popularity over each topic's items


class Catalogue:
    """Items, their latent features and time-varying popularity."""

    def __init__(self, cfg: SimulatorConfig, rng: np.random.Generator):
        n, k = cfg.n_items, cfg.n_topics
        self.names = topic_names(k)
        self.topic = rng.integers(0, k, n)
        self.mix = self._topic_mix(rng, k)
        self.quality = rng.normal(0.0, 0.4, n)
        self.quality_list = self.quality.tolist()
        rank = np.argsort(np.argsort(-(self.quality + rng.normal(0.0, 0.5, n))))
        self.base_pop = 1.0 / (1.0 + rank) ** cfg.zipf_exponent
        durations = np.exp(rng.normal(math.log(cfg.duration_median_s), cfg.duration_sigma, n))
        self.duration_ms = (
            np.clip(durations, cfg.min_duration_s, cfg.max_duration_s) * 1000
        ).astype(np.int64)
        low = cfg.start_ms - cfg.catalog_age_days * DAY_MS
        high = cfg.start_ms + cfg.release_horizon_days * DAY_MS
        self.release_ms = rng.uniform(low, high, n).astype(np.int64)
        self.decay_h = cfg.popularity_decay_median_h * np.exp(rng.normal(0.0, 0.5, n))
        self.item_ids = [f"i{i:06d}" for i in range(n)]
        draws = Draws(rng)
        self.titles = [_title(draws, _vocabulary(self.names[t])) for t in self.topic.tolist()]
        self.members = [np.flatnonzero(self.topic == t) for t in range(k)]
        self._member_lists = [m.tolist() for m in self.members]
        self._cfg = cfg
        self._tables: collections.OrderedDict[int, _PopTable] = collections.OrderedDict()
        self._durations = self.duration_ms.tolist()

    def _topic_mix(self, rng: np.random.Generator, k: int) -> np.ndarray:
        """Mostly the item's own topic, the rest on two other topics: an embedding-ish affinity."""
        n = len(self.topic)
        mix = np.zeros((n, k))
        rows = np.arange(n)
        primary = rng.uniform(0.6, 0.9, n)
        split = rng.uniform(0.0, 1.0, n)
        others = (self.topic[:, None] + rng.integers(1, k, (n, 2))) % k
        mix[rows, self.topic] = primary
        np.add.at(mix, (rows, others[:, 0]), (1 - primary) * split)
        np.add.at(mix, (rows, others[:, 1]), (1 - primary) * (1 - split))
        return mix

    def duration(self, item: int) -> int:
        return self._durations[item]

    def popularity(self, t_ms: int) -> np.ndarray:
        """Popularity of every item at ``t_ms``: Zipf base × rise-and-decay since release."""
        age_ms = t_ms - self.release_ms
        age = np.maximum(age_ms, 0)
        rise = 1.0 - np.exp(-age / (self._cfg.popularity_rise_h * HOUR_MS))
        decay = np.exp(-age / (self.decay_h * HOUR_MS))
        curve = rise * decay + self._cfg.evergreen_floor * (age > 0)
        return np.where(age_ms > 0, self.base_pop * curve, 0.0)

    def _table(self, t_ms: int) -> _PopTable:
        hour = t_ms // HOUR_MS
        table = self._tables.get(hour)
        if table is None:
            pop = self.popularity(hour * HOUR_MS)
            if pop.sum() <= 0:  # nothing released yet: fall back to base popularity
                pop = self.base_pop
            table = _PopTable(
                np.cumsum(pop).tolist(), [np.cumsum(pop[m]).tolist() for m in self.members]
            )
            self._tables[hour] = table
            if len(self._tables) > 8:
                self._tables.popitem(last=False)
        return table

    def sample_popular(self, t_ms: int, u: float) -> int:
        return sample_cumulative(self._table(t_ms).everywhere, u)

    def sample_in_topic(self, t_ms: int, topic: int, u: float) -> int:
        cum = self._table(t_ms).by_topic[topic]
        if not cum or cum[-1] <= 0:
            return self.sample_popular(t_ms, u)
        return self._member_lists[topic][sample_cumulative(cum, u)]

    def info(self) -> list[ItemInfo]:
        return [self._info(i) for i in range(len(self.item_ids))]

    def _info(self, i: int) -> ItemInfo:
        weights = {self.names[t]: round(float(w), 4) for t, w in enumerate(self.mix[i]) if w > 0}
        return ItemInfo(
            item_id=self.item_ids[i],
            topic=self.names[int(self.topic[i])],
            topic_weights=weights,
            duration_ms=int(self.duration_ms[i]),
            title=self.titles[i],
            base_popularity=round(float(self.base_pop[i]), 6),
            release_ms=int(self.release_ms[i]),
            popularity_decay_h=round(float(self.decay_h[i]), 3),
            quality=round(float(self.quality[i]), 4),
        )
