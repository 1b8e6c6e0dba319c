"""Scale-out on Ray: ``kickoff_for_each`` over worker processes, with every promise kept.

``RayRunner`` runs a batch's kickoffs on Ray actors. Each worker is an async actor running
many kickoffs at once under its own event loop (``execute_async``, the same core as
``kickoff_async``); the crew is shipped once per worker per batch, then inputs in chunks,
topped up as kickoffs finish so that no worker idles while inputs wait.

Usage is never lost to a process boundary. Every ``UsageRecord`` a worker makes is put on a
long-lived stream back to the driver as soon as it exists (a per-kickoff listener on
``LLMCallFinished``), batched with whatever else is ready, and comes back once more inside
its ``CrewOutput``; the driver merges records by ``UsageRecord.id``, so one counted twice is
impossible and one made by a worker that is then killed still counts. The kickoffs a lost
worker had not finished raise ``WorkerLostError`` with the spend streamed so far.

Failure policy, as under ``kickoff_for_each``: the first failure stops the batch from
starting more kickoffs, and is raised with the batch's whole spend (later failures as
``.other_errors``); kickoffs already running on live workers are never cut off mid-request:
they finish, and their spend counts.

Only this module imports Ray. The runner starts (or joins) Ray from a thread of its own that
lives as long as the runner, never from a short-lived thread or ``asyncio.to_thread``: parts
of Ray's start-up belong to the thread that called ``ray.init``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import math
import sys
import threading
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from contextvars import ContextVar
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

try:
    import ray
    import ray.exceptions
except ImportError as missing:  # pragma: no cover - depends on the environment
    raise ImportError("crewline.ray needs Ray: pip install 'crewline[ray]'") from missing
import structlog

from crewline import events
from crewline._accounting.usage import Usage, UsageRecord
from crewline._core.outputs import CrewOutput
from crewline._definitions.base import Definition, RateLimitedDefinition
from crewline._execution.remote import (
    BatchJob,
    Carried,
    CarriedVar,
    Message,
    Worker,
    definitions_of,
)
from crewline.errors import CrewlineError, DefinitionError, WorkerLostError

if TYPE_CHECKING:
    from crewline._crew.crew import Crew
    from crewline.budget import Budget

__all__ = ["RayRunner"]

_T = TypeVar("_T")
_log = logging.getLogger("crewline.ray")


def _locate(var: ContextVar[Any]) -> CarriedVar:
    """Find the module global that is ``var``, so a worker can import the same variable."""
    for module_name, module in list(sys.modules.items()):
        if module is None or module_name == "__main__":
            continue
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for attr, value in list(namespace.items()):
            if value is var:
                return CarriedVar(module_name, attr)
    raise DefinitionError(
        f"ContextVar {var.name!r} is not a global of an importable module; define it at "
        "module level (not in __main__) so Ray workers can import it")


def _inject_trace_context() -> dict[str, str] | None:
    try:
        from opentelemetry import propagate
    except ImportError:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier or None


def _check_rate_limits(crew: Crew, workers: int) -> None:
    for definition in definitions_of(crew):
        if not isinstance(definition, RateLimitedDefinition):
            continue
        for name in ("max_rpm", "max_tpm"):
            value = getattr(definition, name)
            if value is not None and value < workers:
                raise DefinitionError(
                    f"{type(definition).__name__} {_label(definition)}: {name}={value} cannot "
                    f"be split over {workers} Ray workers (each keeps {name} // workers); "
                    "raise the limit or use fewer workers")


def _label(definition: Definition) -> str:
    for attr in ("name", "role", "model"):
        value = getattr(definition, attr, None)
        if isinstance(value, str):
            return repr(value)
    return ""


def _check_budgets(crew: Crew, budget: Budget | None) -> None:
    """Budgets that span kickoffs must be counted where every worker sees them."""
    spanning: list[tuple[str, Budget]] = []
    if budget is not None:
        spanning.append(("the batch's budget", budget))
    if crew.budget is not None and crew.budget.period == "day":
        spanning.append(("the crew's daily budget", crew.budget))
    for task in crew.tasks:
        if task.budget is not None and task.budget.period == "day":
            spanning.append((f"task {task.name or task.description[:30]!r}'s daily budget",
                             task.budget))
    for what, spanned in spanning:
        if not spanned.ledger_is_shared:
            raise DefinitionError(
                f"budget {spanned.name!r} ({what}) spans kickoffs that a RayRunner spreads "
                "over worker processes, but its ledger is in one process's memory: each "
                "worker would keep a cap of its own. Give it a shared ledger: "
                "SQLiteLedger(path) on one host, RedisLedger(url) across hosts")


_RemoteWorker: Any = ray.remote(Worker)


# -- the driver --------------------------------------------------------------------------------


class _DriverBatch:
    """The driver's side of one batch: what each worker holds, and every record seen."""

    def __init__(self, n: int, actors: list[Any]) -> None:
        workers = len(actors)
        self.n = n
        self.actors = actors
        self.next_index = 0
        self.assigned = [0] * workers
        self.in_flight: list[set[int]] = [set() for _ in range(workers)]
        self.closed = [False] * workers
        self.lost = [False] * workers
        self.outputs: dict[int, CrewOutput] = {}
        self.failures: list[BaseException] = []
        self.records: dict[str, UsageRecord] = {}
        self.by_index: dict[int, dict[str, UsageRecord]] = {}
        self.stopping = False

    def merge(self, index: int, records: Sequence[UsageRecord]) -> None:
        """Count each record once, however many times and ways it arrives."""
        mine = self.by_index.setdefault(index, {})
        for record in records:
            self.records.setdefault(record.id, record)
            mine.setdefault(record.id, record)


class RayRunner:
    """Runs ``kickoff_for_each`` batches on Ray workers.

    ``address=None`` joins the Ray already initialised in this process, or starts a local
    one (with the process's CPUs); an address (``"ray://head:10001"``, ``"auto"``) joins a
    cluster. ``workers`` async actors each run up to ``concurrency`` kickoffs at once.
    ``context`` names ContextVars whose values (taken where the batch is started) are set
    around each kickoff on the workers; they must be globals of modules the workers can
    import. The runner is reusable across batches; ``close()`` (or leaving a ``with``
    block) stops its workers, and Ray itself if the runner started it.
    """

    def __init__(self, address: str | None = None, *, workers: int = 2,
                 concurrency: int = 256, context: Sequence[ContextVar[Any]] = ()) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an int >= 1, got {workers!r}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")
        for var in context:
            if not isinstance(var, ContextVar):
                raise TypeError(f"context must hold ContextVars, got {type(var).__name__}")
        self.address = address
        self.workers = workers
        self.concurrency = concurrency
        self.context = tuple(context)
        self._carried_vars = tuple((var, _locate(var)) for var in self.context)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._actors: list[Any | None] = [None] * workers
        self._started_ray = False
        self._closed = False

    # -- public ----------------------------------------------------------------------------

    def run(self, crew: Crew, inputs: Sequence[Mapping[str, Any]], *,
            budget: Budget | None = None, listeners: Sequence[Any] = ()) -> list[CrewOutput]:
        """Every kickoff of the batch on the workers; blocks until the batch is over."""
        future = self._submit(crew, inputs, budget, listeners)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    async def run_async(self, crew: Crew, inputs: Sequence[Mapping[str, Any]], *,
                        budget: Budget | None = None,
                        listeners: Sequence[Any] = ()) -> list[CrewOutput]:
        """``run`` for asyncio callers: cancelling it cancels the batch's kickoffs."""
        return await asyncio.wrap_future(self._submit(crew, inputs, budget, listeners))

    def worker_pids(self) -> list[int]:
        """The process ids of the live workers (starting them if need be)."""
        return self._call(self._worker_pids())

    def close(self) -> None:
        """Stop the workers (and Ray, if this runner started it); idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()

    def __enter__(self) -> RayRunner:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"RayRunner(address={self.address!r}, workers={self.workers}, "
                f"concurrency={self.concurrency})")

    # -- the runner's own thread -------------------------------------------------------------

    def _submit(self, crew: Crew, inputs: Sequence[Mapping[str, Any]], budget: Budget | None,
                listeners: Sequence[Any]) -> concurrent.futures.Future[list[CrewOutput]]:
        """Check the batch here, where errors are cheap, then hand it to the runner's loop."""
        from crewline._execution.batch import build_batch

        if isinstance(inputs, Mapping | str | bytes):
            from crewline.errors import InputError

            raise InputError("inputs must be a sequence of mappings, one per run")
        items: list[Mapping[str, Any]] = list(inputs)
        build_batch(items, lambda item, key: crew._run(item, budget, (), key))  # validates
        _check_budgets(crew, budget)
        _check_rate_limits(crew, self.workers)
        carried = self._capture()
        caller = contextvars.copy_context()
        return self._future(self._execute(crew, items, budget, tuple(listeners), carried,
                                          caller))

    def _capture(self) -> Carried:
        values = []
        for var, ref in self._carried_vars:
            try:
                values.append((ref, var.get()))
            except LookupError:
                continue
        return Carried(tuple(values), dict(structlog.contextvars.get_contextvars()),
                        _inject_trace_context())

    def _future(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        loop = self._ensure_loop()
        return asyncio.run_coroutine_threadsafe(coro, loop)

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return self._future(coro).result()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise RuntimeError("this RayRunner is closed")
            if self._loop is not None:
                return self._loop
            ready = threading.Event()
            holder: list[asyncio.AbstractEventLoop] = []

            def serve() -> None:
                loop = asyncio.new_event_loop()
                asyncio.set_event_loop(loop)
                holder.append(loop)
                ready.set()
                try:
                    loop.run_forever()
                finally:
                    loop.close()

            # A long-lived thread of the runner's own: Ray's start-up must not die with a
            # short-lived thread that happened to call it first.
            thread = threading.Thread(target=serve, name="crewline-ray-runner", daemon=True)
            thread.start()
            ready.wait()
            self._thread, self._loop = thread, holder[0]
            return self._loop

    def _start_ray(self) -> None:
        if ray.is_initialized():
            return
        ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        self._started_ray = True

    async def _live_actors(self) -> list[Any]:
        """The workers, with any that died replaced by fresh ones."""
        self._start_ray()
        waiting = []
        for i, actor in enumerate(self._actors):
            if actor is None:
                actor = self._actors[i] = _RemoteWorker.options(
                    scheduling_strategy="SPREAD", max_concurrency=100_000).remote()
            waiting.append(actor.pid.remote())
        await asyncio.gather(*waiting)
        return [actor for actor in self._actors if actor is not None]

    async def _worker_pids(self) -> list[int]:
        actors = await self._live_actors()
        return list(await asyncio.gather(*(actor.pid.remote() for actor in actors)))

    async def _shutdown(self) -> None:
        for actor in self._actors:
            if actor is not None:
                ray.kill(actor)
        self._actors = [None] * self.workers
        if self._started_ray:
            ray.shutdown()

    # -- one batch ---------------------------------------------------------------------------

    async def _execute(self, crew: Crew, items: list[Mapping[str, Any]], budget: Budget | None,
                       listeners: tuple[Any, ...], carried: Carried,
                       caller: contextvars.Context) -> list[CrewOutput]:
        if not items:
            return []
        actors = await self._live_actors()
        batch_id = uuid.uuid4().hex
        job = BatchJob(budget=budget, budget_key=f"batch-{batch_id}", carried=carried,
                   forward_events=bool(listeners), workers=len(actors),
                   concurrency=self.concurrency)
        state = _DriverBatch(len(items), actors)
        crew_ref = ray.put(crew)  # serialised once, fetched once by each worker
        streams = [actor.serve.options(num_returns="streaming").remote(batch_id, crew_ref, job)
                   for actor in actors]
        for w in range(len(actors)):
            self._assign(state, w, batch_id, items, first=True)

        def deliver(event: events.Event) -> None:
            for listener in listeners:
                try:
                    caller.run(listener, event)
                except Exception:  # a listener never breaks a batch, as in a local run
                    _log.exception("crewline event listener %r failed on %s", listener,
                                   type(event).__name__)

        consumers = [asyncio.get_running_loop().create_task(
            self._consume(state, w, stream, batch_id, items, deliver))
            for w, stream in enumerate(streams)]
        try:
            await asyncio.gather(*consumers)
        except asyncio.CancelledError as cancelled:
            for consumer in consumers:
                consumer.cancel()
            for actor in actors:
                actor.cancel.remote(batch_id)
            records = list(state.records.values())
            cancelled.usage_records = tuple(records)  # type: ignore[attr-defined]
            cancelled.usage = Usage.from_records(records)  # type: ignore[attr-defined]
            raise
        if state.failures:
            first, *rest = state.failures
            error = first if isinstance(first, CrewlineError) else self._wrap(first)
            error.other_errors = (*error.other_errors, *rest)
            error.attach_spend(list(state.records.values()))
            raise error
        return [state.outputs[i] for i in range(len(items))]

    @staticmethod
    def _wrap(exc: BaseException) -> CrewlineError:
        wrapped = CrewlineError(f"batch failed: {type(exc).__name__}: {exc}")
        wrapped.__cause__ = exc
        return wrapped

    def _assign(self, state: _DriverBatch, w: int, batch_id: str,
                items: list[Mapping[str, Any]], *, first: bool = False) -> None:
        """Top worker ``w`` up to ``concurrency`` kickoffs; close it when nothing is left.

        The first share is an even split, so a small batch still spreads over every
        worker; later ones refill in chunks (a quarter of the room at least) rather than
        one remote call per kickoff."""
        if state.closed[w]:
            return
        actor = state.actors[w]
        room = self.concurrency - len(state.in_flight[w])
        left = state.n - state.next_index
        if first:
            room = min(room, math.ceil(state.n / len(state.actors)))
            wanted = 1
        else:
            wanted = min(left, max(1, self.concurrency // 4))
        if not state.stopping and left > 0 and room >= wanted:
            count = min(room, left)
            start = state.next_index
            state.next_index += count
            chunk = [(i, items[i]) for i in range(start, start + count)]
            state.in_flight[w].update(range(start, start + count))
            state.assigned[w] += count
            actor.submit.remote(batch_id, chunk)
        if state.stopping or state.next_index >= state.n:
            state.closed[w] = True
            actor.close.remote(batch_id, state.assigned[w])

    async def _consume(self, state: _DriverBatch, w: int, stream: Any,
                       batch_id: str, items: list[Mapping[str, Any]],
                       deliver: Callable[[events.Event], None]) -> None:
        try:
            async for ref in stream:
                messages: list[Message] = await ref
                for kind, index, payload in messages:
                    if kind == "record":
                        state.merge(index, (payload,))
                    elif kind == "event":
                        deliver(payload)
                    elif kind == "done":
                        state.merge(index, payload.usage_records)
                        state.outputs[index] = payload
                        state.in_flight[w].discard(index)
                    elif kind == "failed":
                        state.merge(index, getattr(payload, "usage_records", ()))
                        state.failures.append(payload)
                        state.in_flight[w].discard(index)
                        self._stop(state, batch_id)
                    elif kind == "skipped":
                        state.in_flight[w].discard(index)
                self._assign(state, w, batch_id, items)
        except ray.exceptions.RayError as exc:
            self._lost(state, w, exc)
            self._stop(state, batch_id)

    def _stop(self, state: _DriverBatch, batch_id: str) -> None:
        """After a failure: start nothing more; kickoffs running on live workers finish."""
        if state.stopping:
            return
        state.stopping = True
        for w, actor in enumerate(state.actors):
            if not state.lost[w]:
                actor.abort.remote(batch_id)
                if not state.closed[w]:
                    state.closed[w] = True
                    actor.close.remote(batch_id, state.assigned[w])

    def _lost(self, state: _DriverBatch, w: int, exc: BaseException) -> None:
        """Worker ``w`` died: each kickoff it had not finished fails with what it spent."""
        state.lost[w] = True
        if self._actors[w] is state.actors[w]:
            self._actors[w] = None  # replaced at the next batch
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        for index in sorted(state.in_flight[w]):
            error = WorkerLostError(
                f"kickoff {index} of the batch was running on Ray worker {w}, which was lost "
                f"before the kickoff ended ({type(exc).__name__}: {reason})",
                index=index, worker=str(w))
            error.attach_spend(list(state.by_index.get(index, {}).values()))
            state.failures.append(error)
        state.in_flight[w].clear()
