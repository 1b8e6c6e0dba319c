"""Totals are sums of records: any order, any split, any threads give the same numbers."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from crewline import Usage, UsageRecord
from crewline._accounting.ids import new_id
from crewline._accounting.usage import UsageScope

records = st.builds(
    UsageRecord,
    id=st.uuids().map(lambda u: u.hex),
    run_id=st.just("run"),
    task=st.sampled_from(["a", "b", "c"]),
    attempt=st.integers(1, 3),
    agent=st.sampled_from(["x", "y"]),
    purpose=st.sampled_from(["agent", "conversion", "guardrail"]),
    model=st.just("m"),
    prompt_tokens=st.integers(0, 10_000),
    completion_tokens=st.integers(0, 10_000),
    cached_prompt_tokens=st.integers(0, 100),
    reasoning_tokens=st.integers(0, 100),
    cost=st.decimals(min_value=0, max_value=1, places=9, allow_nan=False),
    priced=st.booleans(),
    latency_s=st.floats(0, 10),
    started_at=st.just(datetime(2026, 1, 1, tzinfo=UTC)),
    outcome=st.sampled_from(["ok", "error", "cancelled"]),
)


@given(st.lists(records, max_size=60), st.randoms(use_true_random=False),
       st.integers(1, 6))
@settings(max_examples=150, deadline=None)
def test_any_interleaving_gives_the_same_totals(rs: list[UsageRecord], rnd, threads: int
                                                ) -> None:  # type: ignore[no-untyped-def]
    expected = Usage.from_records(rs)
    shuffled = list(rs)
    rnd.shuffle(shuffled)
    assert Usage.from_records(shuffled) == expected
    # split across task scopes filled from several threads at once
    run = UsageScope("run", run_id="run")
    tasks = {name: run.child("task", task=name) for name in ("a", "b", "c")}
    chunks = [shuffled[i::threads] for i in range(threads)]
    barrier = threading.Barrier(threads)

    def fill(chunk: list[UsageRecord]) -> None:
        barrier.wait()
        for r in chunk:
            tasks[r.task or "a"].child("attempt", attempt=r.attempt or 1).add(r)

    workers = [threading.Thread(target=fill, args=(c,)) for c in chunks]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert run.usage == expected
    assert sum((t.usage for t in tasks.values()), Usage()) == expected
    assert sorted(r.id for r in run.records) == sorted(r.id for r in rs)
    assert expected.requests + expected.failed_requests == len(rs)
    assert expected.total_tokens == expected.prompt_tokens + expected.completion_tokens
    assert isinstance(expected.cost, Decimal)


@given(st.lists(records, max_size=30), st.lists(records, max_size=30))
def test_usage_addition_matches_concatenation(a: list[UsageRecord], b: list[UsageRecord]
                                              ) -> None:
    assert Usage.from_records(a) + Usage.from_records(b) == Usage.from_records(a + b)
    assert sum([Usage.from_records(a), Usage.from_records(b)], Usage()) == Usage.from_records(
        a + b)


def test_record_and_run_ids_are_version_4_uuids_and_distinct() -> None:
    """``new_id`` makes run and record ids without a ``UUID`` object; they keep its form."""
    ids = [new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for made in ids:
        parsed = uuid.UUID(hex=made)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert parsed.hex == made
