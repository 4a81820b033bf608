"""Explanation (and so audit record) ids are UUIDv7s: unique, time-ordered, carrying their creation time."""

from __future__ import annotations

import itertools
import time
import uuid

from explainers.envelope import new_explanation_id, new_explanation_ids


def test_ids_are_uuid7_with_their_creation_time_and_ordered() -> None:
    before = time.time_ns() // 1_000_000
    made = []
    for _ in range(2000):
        made.append(new_explanation_id())
        if len(made) % 500 == 0:
            time.sleep(0.002)  # a few different milliseconds
    after = time.time_ns() // 1_000_000
    assert len(set(made)) == len(made)
    parsed = [uuid.UUID(text) for text in made]
    assert all(str(u) == text for u, text in zip(parsed, made, strict=True))  # canonical, lower-case
    assert {u.version for u in parsed} == {7} and {u.variant for u in parsed} == {uuid.RFC_4122}
    stamps = [u.int >> 80 for u in parsed]
    assert all(before <= s <= after for s in stamps)
    assert stamps == sorted(stamps) and len(set(stamps)) >= 4
    # as text too: every id made in a later millisecond sorts after every id of an earlier one
    by_millisecond: dict[int, list[str]] = {}
    for stamp, text in zip(stamps, made, strict=True):
        by_millisecond.setdefault(stamp, []).append(text)
    groups = [by_millisecond[stamp] for stamp in sorted(by_millisecond)]
    assert all(max(early) < min(late) for early, late in itertools.pairwise(groups))


def test_ids_made_together_are_uuid7_of_one_millisecond_and_all_different() -> None:
    before = time.time_ns() // 1_000_000
    made = new_explanation_ids(5000)
    after = time.time_ns() // 1_000_000
    parsed = [uuid.UUID(text) for text in made]
    assert len(set(made)) == 5000 and all(str(u) == text for u, text in zip(parsed, made, strict=True))
    assert {u.version for u in parsed} == {7} and {u.variant for u in parsed} == {uuid.RFC_4122}
    assert len({u.int >> 80 for u in parsed}) == 1 and before <= parsed[0].int >> 80 <= after
    random_bits = [u.int & ((1 << 62) - 1) | (u.int >> 64 & 0xFFF) << 62 for u in parsed]
    assert len(set(random_bits)) == 5000 and max(random_bits).bit_length() > 70, "74 random bits each"
    assert new_explanation_ids(0) == []
