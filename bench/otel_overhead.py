"""What ``crewline.otel.instrument()`` adds per task, on the per-task benchmark's crew.

The crew of ``overhead.py`` (20 sequential tasks) runs with and without instrumentation,
alternating (off, on, on, off, ...); the figure is the median of the paired differences,
divided by the tasks. Three settings:

* engine only: an in-process transport that answers at once (no litellm, no HTTP), so the
  difference is the listener's whole cost (events built, spans, metric points);
* the same under ``kickoff_async``;
* real kickoffs through litellm against the fake server (latency 0).

The SDK is set up as an application would: a ``BatchSpanProcessor`` (export off the work's
thread) with an exporter that drops what it gets, and a ``MeterProvider`` with a reader.

    python bench/otel_overhead.py
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import Callable, Sequence
from typing import Any

import _common as common
from overhead import InstantTransport, _crew


class _Drop:
    """A span exporter that accepts and discards (the cost of exporting is the backend's)."""

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _paired(run: Callable[[], None], reps: int, n: int) -> dict[str, float]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    import crewline.otel

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(_Drop()))  # type: ignore[arg-type]
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    times: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(3):
        run()
    for rep in range(reps):
        for mode in (("off", "on") if rep % 2 == 0 else ("on", "off")):
            if mode == "on":
                crewline.otel.instrument(tracer_provider, meter_provider=meter_provider)
            gc.collect()
            t0 = time.perf_counter()
            run()
            times[mode].append(time.perf_counter() - t0)
            crewline.otel.uninstrument()
    tracer_provider.shutdown()
    diffs = [(on - off) / n for off, on in zip(times["off"], times["on"], strict=True)]
    return {"off_ms_per_task": round(1000 * common.median(times["off"]) / n, 3),
            "on_ms_per_task": round(1000 * common.median(times["on"]) / n, 3),
            "extra_ms_per_task": round(1000 * common.median(diffs), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description="crewline.otel overhead per task")
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--reps", type=int, default=21)
    args = parser.parse_args()
    common.setup_offline()
    n = args.tasks

    from crewline import LLM

    engine = _crew(n, LLM(model=common.MODEL, transport=InstantTransport()))
    sync = _paired(lambda: engine.kickoff({"m": "x"}), args.reps, n)
    loop = asyncio.new_event_loop()
    try:
        async_ = _paired(lambda: loop.run_until_complete(engine.kickoff_async({"m": "x"})),
                         args.reps, n)
    finally:
        loop.close()
    with common.ServerProcess(0.0) as server:
        crew = _crew(n, LLM(model=common.MODEL, base_url=server.base_url,
                            api_key=common.API_KEY))
        real = _paired(lambda: crew.kickoff({"m": "real"}), args.reps, n)
    result = {"bench": "otel_overhead", "tasks": n, "reps": args.reps,
              "engine_only": sync, "engine_only_async": async_, "real_kickoff": real}
    summary = [
        f"otel overhead per task (instrumented minus not, median of pairs): engine only "
        f"{sync['extra_ms_per_task']:.3f} ms ({sync['off_ms_per_task']:.3f} -> "
        f"{sync['on_ms_per_task']:.3f}), async {async_['extra_ms_per_task']:.3f} ms "
        f"({async_['off_ms_per_task']:.3f} -> {async_['on_ms_per_task']:.3f}), real kickoff "
        f"{real['extra_ms_per_task']:.3f} ms ({real['off_ms_per_task']:.3f} -> "
        f"{real['on_ms_per_task']:.3f})",
    ]
    common.emit(result, summary)


if __name__ == "__main__":
    main()
