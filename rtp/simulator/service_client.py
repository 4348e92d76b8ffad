"""The closed loop's HTTP client of the recommendation service (``rtp serve``):
``GET /v1/recommendations`` and ``POST /v1/events``. Standard library only: the
simulator installs without the serving extras.

A call either returns the decoded JSON body or raises ``Unavailable`` (the service
did not answer usefully now: unreachable, timed out, 5xx, 429; worth retrying) or
``Refused`` (any other 4xx: the request itself is wrong, retrying cannot help).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class Unavailable(RuntimeError):
    """No useful answer now. ``reason``: a short label to count by (``unreachable``,
    ``timeout``, ``http_503``...); ``retry_after_s``: the service's ``Retry-After``
    header in seconds, None without one."""

    def __init__(self, reason: str, detail: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.retry_after_s = retry_after_s


class Refused(ValueError):
    """A 4xx other than 429: the service rejects the request as it is."""


class ServiceClient:
    """``url``: the service's base URL (``http://host:port``); ``timeout_s``: the
    longest wait for one response, seconds."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"service URL must be http(s)://host[:port], got {url!r}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s}")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def recommend(self, user_id: str, k: int) -> dict[str, Any]:
        """The body of ``GET /v1/recommendations?user_id=…&k=…``."""
        query = urllib.parse.urlencode({"user_id": user_id, "k": k})
        return self._call(urllib.request.Request(f"{self.url}/v1/recommendations?{query}"))

    def post_events(self, body: bytes) -> int:
        """``POST /v1/events`` with a JSON array of events; the number accepted."""
        request = urllib.request.Request(
            f"{self.url}/v1/events",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        return int(self._call(request)["accepted"])

    def _call(self, request: urllib.request.Request) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            detail = e.read()[:300].decode(errors="replace")
            if e.code == 429 or e.code >= 500:
                retry_after_s = _seconds(e.headers.get("Retry-After"))
                raise Unavailable(f"http_{e.code}", detail, retry_after_s) from None
            raise Refused(f"{request.get_method()} {request.full_url}: {e.code} {detail}") from None
        except TimeoutError as e:
            raise Unavailable("timeout", str(e)) from None
        except urllib.error.URLError as e:
            timed_out = isinstance(e.reason, TimeoutError)
            raise Unavailable("timeout" if timed_out else "unreachable", str(e.reason)) from None
        except (ConnectionError, OSError) as e:  # reset or closed mid-response
            raise Unavailable("unreachable", str(e)) from None
        except ValueError as e:  # a body that is not JSON: a proxy's page, a half answer
            raise Unavailable("bad_body", str(e)) from None


def _seconds(header: str | None) -> float | None:
    try:
        return float(header) if header is not None else None
    except ValueError:
        return None
