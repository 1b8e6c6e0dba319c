"""RedisLedger against a real redis-server on 127.0.0.1 (started here, on a temp dir).

The same promises as the SQLite ledger: atomic check-and-hold, exact decimal money at any
size, holds that expire (on the server's clock) and are reclaimed, spend that survives a
``kill -9`` of the server, and a daily budget that two processes racing on it never push
past its cap, measured against the fake server's own count.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

redis = pytest.importorskip("redis")

from crewline import Budget, BudgetExceededError  # noqa: E402
from crewline.budget import Amount, Limit, RedisLedger  # noqa: E402
from crewline.budget.ledger import LimitExceeded, exact_arithmetic  # noqa: E402
from crewline.testing import FakeLLMServer  # noqa: E402
from local_redis import LocalRedis  # noqa: E402

HERE = Path(__file__).resolve().parent
SRC = str(HERE.parent / "src")


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedis]:
    server = LocalRedis(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ledger(redis_server: LocalRedis, request: pytest.FixtureRequest) -> Iterator[RedisLedger]:
    with RedisLedger(redis_server.url, prefix=f"t-{request.node.name}-{os.getpid()}") as led:
        yield led


def test_reserve_settle_release_follow_the_ledger_protocol(ledger: RedisLedger) -> None:
    limit = Limit(Decimal("1.00"), 100, 3)
    first = ledger.reserve("a", Amount(Decimal("0.40"), 10, 1), limit)
    second = ledger.reserve("a", Amount(Decimal("0.50"), 10, 1), limit)
    assert ledger.reserved("a") == Amount(Decimal("0.9"), 20, 2)
    with pytest.raises(LimitExceeded) as info:
        ledger.reserve("a", Amount(Decimal("0.2"), 1, 1), limit)
    assert (info.value.dimension, info.value.asked, info.value.left, info.value.limit) == (
        "cost", Decimal("0.2"), Decimal("0.1"), Decimal("1.00"))
    ledger.settle(first, Amount(Decimal("0.45"), 12, 1))  # above its hold: still recorded
    ledger.settle(first, Amount(Decimal("9"), 9, 9))  # already settled: a no-op
    ledger.release(second)
    ledger.release(second)
    ledger.release("no-such-hold")
    assert ledger.spent("a") == Amount(Decimal("0.45"), 12, 1)
    assert ledger.reserved("a") == Amount()
    ledger.record("a", Amount(Decimal("0.05"), 0, 0))
    assert ledger.spent("a").cost == Decimal("0.5")
    with pytest.raises(LimitExceeded) as info:
        ledger.reserve("a", Amount(Decimal(0), 1, 3), limit)
    assert (info.value.dimension, info.value.left) == ("requests", 2)
    assert isinstance(info.value.left, int)
    assert ledger.spent("other") == Amount()


def test_money_and_counts_are_exact_at_any_size(ledger: RedisLedger) -> None:
    """Lua numbers are doubles; these sums would drift or round in them."""
    tiny = Decimal("0.000000000000000000000000000001")  # 1e-30 dollars
    huge = Decimal("123456789012345678901234567890.5")
    tokens = 10**19 + 1
    for _ in range(10):
        ledger.record("x", Amount(tiny, tokens, 1))
    ledger.record("x", Amount(huge, 0, 0))
    with exact_arithmetic():
        expected = huge + 10 * tiny
        assert ledger.spent("x") == Amount(expected, 10 * tokens, 10)
        assert Decimal(float(expected)) != expected, "a double cannot hold this total"
        limit = Limit(expected + tiny, None, None)
    ledger.reserve("x", Amount(tiny, 0, 0), limit)  # exactly fills the cap
    with pytest.raises(LimitExceeded) as info:
        ledger.reserve("x", Amount(tiny, 0, 0), limit)
    assert info.value.left == 0


def test_twenty_threads_times_fifty_lose_nothing(ledger: RedisLedger) -> None:
    price = Decimal("0.00000123")
    barrier = threading.Barrier(20)
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            for i in range(50):
                rid = ledger.reserve("race", Amount(price * 3, 7, 1), Limit())
                ledger.settle(rid, Amount(price * (i % 3), 5, 1))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    expected_cost = 20 * sum((price * (i % 3) for i in range(50)), Decimal(0))
    assert ledger.spent("race") == Amount(expected_cost, 20 * 50 * 5, 1000)
    assert ledger.reserved("race") == Amount()


def test_concurrent_holds_never_pass_the_cap(ledger: RedisLedger) -> None:
    cap = Limit(Decimal("0.001"), None, None)
    held: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def grab() -> None:
        barrier.wait()
        while True:
            try:
                rid = ledger.reserve("cap", Amount(Decimal("0.00003"), 0, 0), cap)
            except LimitExceeded:
                return
            with lock:
                held.append(rid)

    threads = [threading.Thread(target=grab) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(held) == 33  # floor(0.001 / 0.00003), not one more
    assert ledger.reserved("cap").cost == Decimal("0.00099")


def test_expired_holds_are_reclaimed_and_a_late_settle_still_counts(
        redis_server: LocalRedis) -> None:
    with RedisLedger(redis_server.url, prefix=f"ttl-{os.getpid()}",
                     reservation_ttl=0.3) as ledger:
        cap = Limit(Decimal("1"), None, None)
        stale = ledger.reserve("a", Amount(Decimal("1"), 0, 0), cap)
        with pytest.raises(LimitExceeded):
            ledger.reserve("a", Amount(Decimal("0.5"), 0, 0), cap)
        time.sleep(0.4)  # the hold's TTL, on the Redis server's clock
        assert ledger.reserved("a") == Amount()
        fresh = ledger.reserve("a", Amount(Decimal("0.5"), 0, 0), cap)
        ledger.settle(stale, Amount(Decimal("0.25"), 3, 1))
        assert ledger.spent("a") == Amount(Decimal("0.25"), 3, 1)
        assert ledger.reserved("a") == Amount(Decimal("0.5"), 0, 0)
        ledger.settle(fresh, Amount(Decimal("0.5"), 0, 1))
        assert ledger.spent("a") == Amount(Decimal("0.75"), 3, 2)


def test_pickled_ledger_and_budget_share_the_accounts(ledger: RedisLedger) -> None:
    budget = Budget(max_cost="0.01", period="day", ledger=ledger, name="daily")
    assert budget.ledger_is_shared
    copy = pickle.loads(pickle.dumps(budget))
    assert isinstance(copy.ledger, RedisLedger) and copy.ledger is not ledger
    budget.reserve(Amount(Decimal("0.006")), run_id="r1").settle(Amount(Decimal("0.006")))
    with pytest.raises(BudgetExceededError, match=r"budget 'daily' exceeded.*period day"):
        copy.reserve(Amount(Decimal("0.005")), run_id="r2")
    assert copy.spent().cost == Decimal("0.006")


def test_repr_masks_a_password() -> None:
    ledger = RedisLedger("redis://user:s3cret-pass@127.0.0.1:1/0")
    assert "s3cret" not in repr(ledger)
    assert "s3cret-pass" in pickle.loads(pickle.dumps(ledger)).url


def test_spend_survives_kill_9_and_restart(tmp_path: Path) -> None:
    server = LocalRedis(tmp_path, fsync="always").start()
    try:
        ledger = RedisLedger(server.url, prefix="durable")
        cap = Limit(Decimal("1"), None, None)
        for _ in range(5):
            rid = ledger.reserve("day", Amount(Decimal("0.1"), 1, 1), cap)
            ledger.settle(rid, Amount(Decimal("0.1"), 1, 1))
        open_hold = ledger.reserve("day", Amount(Decimal("0.2"), 0, 0), cap)
        server.kill()
        server.start()  # same port, same directory: replays the append-only file
        assert ledger.spent("day") == Amount(Decimal("0.5"), 5, 5)
        assert ledger.reserved("day") == Amount(Decimal("0.2"), 0, 0)
        ledger.settle(open_hold, Amount(Decimal("0.2"), 0, 1))
        with pytest.raises(LimitExceeded):
            ledger.reserve("day", Amount(Decimal("0.31"), 0, 0), cap)
        ledger.close()
    finally:
        server.stop()


DRIVER = """
import sys, asyncio
from decimal import Decimal
from crewline import LLM, Agent, Budget, BudgetExceededError, Crew, Task
from crewline.budget import RedisLedger

url, base, limit = sys.argv[1:4]
llm = LLM(model="openai/custom-model", base_url=base, api_key="sk-test",
          input_cost_per_token="0.000001", output_cost_per_token="0.000002", max_tokens=20)
agent = Agent(role="Spender", goal="spend", llm=llm)
crew = Crew(agents=[agent], tasks=[Task(description="[[d]] {i} " + "pad " * 20, agent=agent)],
            budget=Budget(max_cost=limit, period="day", ledger=RedisLedger(url, prefix="race"),
                          name="daily"))
from crewline.transport.litellm import litellm_module
litellm_module()  # seconds of import, before the race starts
print("READY", flush=True)
sys.stdin.readline()
try:
    asyncio.run(crew.kickoff_for_each_async([{"i": i} for i in range(200)],
                                            max_concurrency=20))
except BudgetExceededError as exc:
    print("REFUSED", exc.usage.requests + exc.usage.failed_requests, flush=True)
"""


def test_a_daily_budget_in_redis_raced_by_two_driver_processes(
        redis_server: LocalRedis, server: FakeLLMServer) -> None:
    server.latency = 0.01
    limit = Decimal("0.01")
    env = {**os.environ, "PYTHONPATH": SRC, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    drivers = [subprocess.Popen([sys.executable, "-c", DRIVER, redis_server.url,
                                 server.base_url, str(limit)], env=env, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
               for _ in range(2)]
    for driver in drivers:
        assert driver.stdout is not None and driver.stdout.readline().strip() == "READY"
    for driver in drivers:
        assert driver.stdin is not None
        driver.stdin.write("go\n")
        driver.stdin.flush()
    outputs = [driver.communicate(timeout=120)[0] for driver in drivers]
    assert all(out.startswith("REFUSED") for out in outputs), outputs
    served = server.totals()
    served_cost = served.prompt_tokens * Decimal("0.000001") + \
        served.completion_tokens * Decimal("0.000002")
    assert served_cost <= limit
    # cancelled siblings were served too: they are on record as failed requests
    assert served.requests <= sum(int(out.split()[1]) for out in outputs)
    assert all(int(out.split()[1]) > 0 for out in outputs), "both drivers must have spent"
    with RedisLedger(redis_server.url, prefix="race") as ledger:
        budget = Budget(max_cost=limit, period="day", ledger=ledger, name="daily")
        # never under what was served; a cancelled sibling is charged its full hold
        assert served_cost <= budget.spent().cost <= limit
        assert budget.reserved() == Amount()
    # Without the shared ledger, each driver would have spent up to the whole cap.
    assert served_cost > limit / 2
