"""A bounded, thread-safe LRU of loaded model versions; each version is loaded at most once at a time."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class LoadedModelCache(Generic[T]):
    def __init__(self, capacity: int, on_lookup: Callable[[str], None] | None = None) -> None:
        """``on_lookup`` is told ``"hit"`` or ``"miss"`` on every lookup (the registry counts them)."""
        self.capacity = max(1, capacity)
        self.on_lookup = on_lookup or (lambda result: None)
        self._items: OrderedDict[Hashable, T] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[Hashable, threading.Lock] = {}
        self.hits = 0
        self.misses = 0

    def get_or_load(self, key: Hashable, load: Callable[[], T]) -> T:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                self.on_lookup("hit")
                return self._items[key]
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._items:
                    self.hits += 1
                    self.on_lookup("hit")
                    return self._items[key]
            value = load()
            with self._lock:
                self.misses += 1
                self.on_lookup("miss")
                self._items[key] = value
                self._items.move_to_end(key)
                while len(self._items) > self.capacity:
                    self._items.popitem(last=False)
                self._loading.pop(key, None)
            return value

    def __len__(self) -> int:
        return len(self._items)
