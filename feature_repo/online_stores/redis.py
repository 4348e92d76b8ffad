"""Redis (or Memorystore) online store: Feast's, with bounded sockets and a ping."""

from __future__ import annotations

from typing import Literal, Self

from feast import FeatureView, RepoConfig
from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig
from pydantic import Field, model_validator

from feature_repo.online_stores.probe import PING_KEY


class RtpRedisOnlineStoreConfig(RedisOnlineStoreConfig):
    """Feast's Redis config whose connection is bounded by ``timeout_s``."""

    type: Literal["feature_repo.online_stores.redis.RtpRedisOnlineStore"] = (  # type: ignore[assignment]
        "feature_repo.online_stores.redis.RtpRedisOnlineStore"
    )
    """Online store type selector (this class's path)."""

    timeout_s: float = Field(5.0, gt=0)
    """Default in seconds of redis-py's ``socket_timeout`` and
    ``socket_connect_timeout`` where ``connection_string`` does not set them."""

    @model_validator(mode="after")
    def bound_the_connection(self) -> Self:
        """Feast hands ``connection_string``'s ``key=value`` parameters to redis-py."""
        defaults = {
            "socket_timeout": self.timeout_s,
            "socket_connect_timeout": self.timeout_s,
            # redis-py retries a failed connect 3 times with up to 10 s of backoff;
            # callers own retries (Beam retries bundles, the service falls back).
            "retry": "null",
        }
        for param, value in defaults.items():
            if f"{param}=" not in self.connection_string:
                self.connection_string += f",{param}={value}"
        return self


class RtpRedisOnlineStore(RedisOnlineStore):
    def ping(self, config: RepoConfig, view: FeatureView) -> None:
        """A read of a key no row has, through Feast's own client (same host, auth
        and TLS as every read); raises redis-py's errors when down."""
        self.online_read(config, view, [PING_KEY], [])

    @staticmethod
    def unavailable_errors() -> tuple[type[BaseException], ...]:
        """Exceptions meaning "store unreachable or too slow"."""
        from redis.exceptions import ConnectionError, TimeoutError

        return (ConnectionError, TimeoutError)
