"""Per-key rate limits (the ``limits`` library: in memory by default, Redis or Memcached by URL)."""

from __future__ import annotations

import math
import time

from limits import parse, storage, strategies


class KeyRateLimiter:
    """A moving-window limit per API key id; an empty rule or ``off`` turns limiting off."""

    def __init__(self, rule: str, storage_uri: str) -> None:
        self.item = parse(rule) if rule and rule.strip().lower() != "off" else None
        self.limiter = strategies.MovingWindowRateLimiter(storage.storage_from_string(storage_uri))

    def retry_after(self, key_id: str) -> int | None:
        """Count one request for ``key_id``; None when it is allowed, else the seconds until it would be."""
        if self.item is None or self.limiter.hit(self.item, "key", key_id):
            return None
        reset = self.limiter.get_window_stats(self.item, "key", key_id).reset_time
        return max(1, math.ceil(reset - time.time()))
