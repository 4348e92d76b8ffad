"""Rolling per-user and per-item state as exponentially decayed sufficient statistics.

Pure Python + NumPy: no Beam here, so the math is tested on its own and the
streaming job, the backfill job and the replay evaluation share one implementation.
"""

from beam_pipelines.state.config import StateConfig
from beam_pipelines.state.decay import DecayedSums
from beam_pipelines.state.item_state import ItemState
from beam_pipelines.state.records import ScoredEvent
from beam_pipelines.state.user_state import UserState

__all__ = ["DecayedSums", "ItemState", "ScoredEvent", "StateConfig", "UserState"]
