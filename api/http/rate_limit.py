"""Per-key rate limits (the ``limits`` library: in memory by default, Redis or Memcached by URL)."""

from __future__ import annotations

import math
import time

from limits import parse, storage, strategies
from limits.errors import StorageError

from model_store.errors import CandorError

REDIS_SCHEMES = {"redis", "rediss", "redis+unix"}
REDIS_TIMEOUTS = {"socket_connect_timeout": 1.0, "socket_timeout": 1.0}
"""Seconds a request waits for Redis before answering 503; ``?socket_timeout=...`` in the URL overrides."""


class RateLimitUnavailable(CandorError):
    """The counter storage did not answer: requests are refused rather than let through uncounted."""

    status = 503
    title = "Service Unavailable"
    type_slug = "rate-limit-unavailable"


class KeyRateLimiter:
    """A moving-window limit per API key id; an empty rule or ``off`` turns limiting off."""

    def __init__(self, rule: str, storage_uri: str) -> None:
        self.item = parse(rule) if rule and rule.strip().lower() != "off" else None
        scheme = storage_uri.partition("://")[0].lower()
        options = REDIS_TIMEOUTS if scheme in REDIS_SCHEMES else {}
        counters = storage.storage_from_string(storage_uri, wrap_exceptions=True, **options)
        self.limiter = strategies.MovingWindowRateLimiter(counters)

    def retry_after(self, key_id: str) -> int | None:
        """Count one request for ``key_id``; None when it is allowed, else the seconds until it would be.

        Raises RateLimitUnavailable (503) when the counter storage fails."""
        if self.item is None:
            return None
        try:
            if self.limiter.hit(self.item, "key", key_id):
                return None
            reset = self.limiter.get_window_stats(self.item, "key", key_id).reset_time
        except StorageError as error:
            raise RateLimitUnavailable(
                "The rate-limit counter storage is unavailable; retry later."
            ) from error.storage_error
        return max(1, math.ceil(reset - time.time()))
