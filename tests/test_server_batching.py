"""Dynamic micro-batching: concurrent requests share runtime calls, results stay per request."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from server_fakes import ColourRuntime

from server.batching import MicroBatcher
from server.errors import NotReadyError

H, W = 32, 16  # the fake manifest's input size


def images(n: int, value: float) -> np.ndarray:
    out = np.zeros((n, 3, H, W), np.float32)
    out[:, 0] = value  # distinct per request -> distinct embeddings
    return out


def poisoned(n: int = 1) -> np.ndarray:
    return images(n, 1000.0)  # ColourRuntime refuses values > 100


def run(coro):
    return asyncio.run(coro)


async def with_batcher(fn, **kwargs):
    runtime = ColourRuntime(delay=kwargs.pop("delay", 0.0))
    batcher = MicroBatcher(runtime, **kwargs)
    await batcher.start()
    try:
        return await fn(batcher), runtime
    finally:
        await batcher.stop()


def test_concurrent_requests_are_embedded_together_with_correct_rows():
    sizes = [1, 2, 3, 1] * 4  # 16 requests, 28 images
    values = [float(i) / 4 for i in range(len(sizes))]

    async def go(batcher):
        return await asyncio.gather(
            *(batcher.embed(images(n, v)) for n, v in zip(sizes, values, strict=True))
        )

    outputs, runtime = run(with_batcher(go, max_batch=64, max_wait_ms=50))
    assert len(runtime.calls) < len(sizes)
    assert sum(runtime.calls) == sum(sizes)
    reference = ColourRuntime()
    for out, n, v in zip(outputs, sizes, values, strict=True):
        assert out.shape == (n, 8)
        np.testing.assert_allclose(out, reference.embed(images(n, v)), rtol=1e-5, atol=1e-6)


def test_batches_never_exceed_max_batch():
    async def go(batcher):
        return await asyncio.gather(*(batcher.embed(images(3, 0.1)) for _ in range(10)))

    _, runtime = run(with_batcher(go, max_batch=7, max_wait_ms=50))
    assert max(runtime.calls) <= 7
    assert sum(runtime.calls) == 30


def test_a_lone_request_waits_at_most_max_wait():
    async def go(batcher):
        loop = asyncio.get_running_loop()
        start = loop.time()
        await batcher.embed(images(1, 0.1))
        return loop.time() - start

    elapsed, runtime = run(with_batcher(go, max_batch=32, max_wait_ms=20))
    assert runtime.calls == [1]
    assert elapsed < 0.5


def test_requests_queued_behind_a_busy_worker_go_without_waiting_again():
    async def go(batcher):
        first = asyncio.create_task(batcher.embed(images(4, 0.1)))  # a full batch: goes
        await asyncio.sleep(0.02)  # the worker is in the 0.4 s call of the first request
        loop = asyncio.get_running_loop()
        start = loop.time()
        queued = [asyncio.create_task(batcher.embed(images(1, 0.2))) for _ in range(3)]
        await first
        freed = loop.time()
        await asyncio.gather(*queued)
        return freed - start, loop.time() - freed

    # max_wait 300 ms: counted from arrival, the queued requests' wait is over when the
    # worker frees (~0.38 s after they came), so their batch starts at once
    (waited, after), runtime = run(with_batcher(go, max_batch=4, max_wait_ms=300, delay=0.4))
    assert runtime.calls == [4, 3]
    assert waited > 0.3 and after < 0.4 + 0.25


def test_an_error_reaches_only_the_request_that_caused_it():
    async def go(batcher):
        return await asyncio.gather(
            batcher.embed(images(2, 0.1)),
            batcher.embed(poisoned()),
            batcher.embed(images(1, 0.3)),
            return_exceptions=True,
        )

    (good1, bad, good2), _ = run(with_batcher(go, max_batch=32, max_wait_ms=50))
    assert isinstance(bad, ValueError) and "poisoned" in str(bad)
    assert good1.shape == (2, 8) and good2.shape == (1, 8)


def test_disabled_mode_makes_one_runtime_call_per_request():
    async def go(batcher):
        return await asyncio.gather(*(batcher.embed(images(2, 0.1)) for _ in range(5)))

    outputs, runtime = run(with_batcher(go, enabled=False, max_wait_ms=50))
    assert runtime.calls == [2] * 5
    assert all(out.shape == (2, 8) for out in outputs)


def test_disabled_mode_errors_reach_the_caller():
    async def go(batcher):
        with pytest.raises(ValueError, match="poisoned"):
            await batcher.embed(poisoned())
        return await batcher.embed(images(1, 0.2))

    out, _ = run(with_batcher(go, enabled=False))
    assert out.shape == (1, 8)


def test_stop_drains_queued_requests_and_then_refuses_new_ones():
    async def go():
        runtime = ColourRuntime(delay=0.05)
        batcher = MicroBatcher(runtime, max_batch=2, max_wait_ms=1)
        await batcher.start()
        pending = [asyncio.create_task(batcher.embed(images(2, 0.1))) for _ in range(4)]
        await asyncio.sleep(0)  # let them enqueue
        await batcher.stop()
        assert all(task.done() and task.result().shape == (2, 8) for task in pending)
        with pytest.raises(NotReadyError):
            await batcher.embed(images(1, 0.1))

    run(go())


def test_runtime_runs_off_the_event_loop():
    """While the runtime sleeps in its thread, the event loop keeps ticking."""

    async def go(batcher):
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        task = asyncio.create_task(ticker())
        await batcher.embed(images(1, 0.1))
        task.cancel()
        return ticks

    ticks, _ = run(with_batcher(go, delay=0.2, max_wait_ms=1))
    assert ticks >= 10


def test_overload_is_refused_with_not_ready():
    async def go(batcher):
        first = asyncio.create_task(batcher.embed(images(3, 0.1)))
        await asyncio.sleep(0)
        with pytest.raises(NotReadyError, match="overloaded"):
            await batcher.embed(images(3, 0.1))
        return await first

    out, _ = run(with_batcher(go, max_queue=4, delay=0.05))
    assert out.shape == (3, 8)


def test_batch_sizes_are_recorded_in_the_histogram():
    async def go(batcher):
        await asyncio.gather(*(batcher.embed(images(1, 0.1)) for _ in range(8)))
        return batcher.metrics.render().decode()

    text, runtime = run(with_batcher(go, max_batch=8, max_wait_ms=50))
    assert f"reid_batch_size_images_count {float(len(runtime.calls))}" in text
    assert "reid_images_embedded_total 8.0" in text


class BusyRuntime(ColourRuntime):
    """Spends ``cpu`` seconds of its own thread's CPU time per call (then ``delay`` asleep)."""

    def __init__(self, cpu: float, delay: float = 0.0) -> None:
        super().__init__(delay=delay)
        self.cpu = cpu

    def _embed(self, images_: np.ndarray) -> np.ndarray:
        start = time.thread_time()
        while time.thread_time() - start < self.cpu:
            pass
        return super()._embed(images_)


def _inference_cpu(text: str) -> float:
    line = next(x for x in text.splitlines() if x.startswith("reid_inference_cpu_seconds_total"))
    return float(line.split()[1])


@pytest.mark.parametrize("enabled", [True, False], ids=["batching", "no-batching"])
def test_the_runtimes_cpu_time_is_counted_and_sleep_is_not(enabled):
    """``reid_inference_cpu_seconds_total`` is the CPU the calls themselves used (so a
    benchmark can subtract it from the process's CPU): 4 calls burning 30 ms each count
    ~120 ms, while their 50 ms asleep each and what other threads of the process burn
    meanwhile do not."""

    async def go(batcher):
        stop = threading.Event()

        def burn() -> None:  # another thread of the process, busy the whole time
            while not stop.is_set():
                sum(range(1000))

        burner = threading.Thread(target=burn)
        burner.start()
        try:
            for _ in range(4):
                await batcher.embed(images(1, 0.1))
        finally:
            stop.set()
            burner.join()
        return batcher.metrics.render().decode()

    async def with_busy():
        batcher = MicroBatcher(BusyRuntime(cpu=0.03, delay=0.05), enabled=enabled, max_wait_ms=0)
        await batcher.start()
        try:
            return await go(batcher)
        finally:
            await batcher.stop()

    counted = _inference_cpu(run(with_busy()))
    assert 0.12 <= counted < 0.12 + 0.04


class OverlapRuntime(ColourRuntime):
    """Records how many ``embed`` calls ran at the same time."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay=delay)
        self.running = 0
        self.most_at_once = 0

    def _embed(self, images_: np.ndarray) -> np.ndarray:
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            return super()._embed(images_)
        finally:
            with self.lock:
                self.running -= 1


def overlap(workers: int, runtime: OverlapRuntime | None = None) -> OverlapRuntime:
    runtime = runtime or OverlapRuntime(delay=0.05)

    async def go():
        batcher = MicroBatcher(runtime, max_batch=2, max_wait_ms=1, workers=workers)
        await batcher.start()
        try:
            outputs = await asyncio.gather(*(batcher.embed(images(1, i / 8)) for i in range(8)))
        finally:
            await batcher.stop()
        reference = ColourRuntime()
        for i, out in enumerate(outputs):
            np.testing.assert_allclose(out, reference.embed(images(1, i / 8)), rtol=1e-5)

    run(go())
    return runtime


def test_with_two_workers_the_next_batch_runs_while_the_previous_one_does():
    assert overlap(workers=2).most_at_once == 2


def test_one_worker_runs_one_batch_at_a_time():
    assert overlap(workers=1).most_at_once == 1


def test_waiting_requests_are_shared_among_idle_workers():
    runtime = OverlapRuntime(delay=0.1)

    async def go():
        batcher = MicroBatcher(runtime, max_batch=16, max_wait_ms=20, workers=2)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.embed(images(1, i / 16)) for i in range(16)))
        finally:
            await batcher.stop()

    outputs = run(go())
    assert sorted(runtime.calls) == [8, 8] and runtime.most_at_once == 2
    for i, out in enumerate(outputs):
        np.testing.assert_allclose(out, ColourRuntime().embed(images(1, i / 16)), rtol=1e-5)


@pytest.mark.parametrize(("workers", "calls"), [(1, [4]), (2, [2, 2])])
def test_requests_within_max_wait_wait_for_it_then_go_to_the_idle_workers(workers, calls):
    runtime = OverlapRuntime(delay=0.05)  # a call lasts: the other worker is still idle

    async def go():
        batcher = MicroBatcher(runtime, max_batch=32, max_wait_ms=200, workers=workers)
        await batcher.start()
        try:
            calls = []
            for i in range(4):  # 5 ms apart, all inside the first one's 200 ms
                calls.append(asyncio.create_task(batcher.embed(images(1, i / 4))))
                await asyncio.sleep(0.005)
            await asyncio.gather(*calls)
        finally:
            await batcher.stop()

    run(go())
    assert sorted(runtime.calls) == calls  # no call of 1: all four waited out max_wait


def test_a_runtime_that_cannot_run_calls_concurrently_gets_one_worker():
    runtime = OverlapRuntime(delay=0.05)
    runtime.concurrent_calls = False  # as TensorRTRuntime
    assert MicroBatcher(runtime, workers=4).workers == 1
    assert overlap(workers=4, runtime=runtime).most_at_once == 1


# -- one executor job per event-loop turn (server.coalesce) ---------------------------------


def test_the_items_of_one_turn_share_one_executor_job_with_their_own_outcomes():
    from concurrent.futures import ThreadPoolExecutor

    from server.coalesce import TurnCoalescer, each

    def square(x: int) -> int:
        if x < 0:
            raise ValueError(f"negative: {x}")
        return x * x

    async def go():
        with ThreadPoolExecutor(2) as pool:
            coalescer = TurnCoalescer(pool, each(square), max_items=4)
            together = await asyncio.gather(
                *(coalescer.run(x) for x in [1, 2, -3, 4, 5, 6]), return_exceptions=True
            )
            jobs_together = coalescer.jobs
            alone = [await coalescer.run(x) for x in (7, 8)]  # one turn each
            return together, jobs_together, alone, coalescer.jobs

    together, jobs_together, alone, jobs = run(go())
    assert together[:2] == [1, 4] and together[3:] == [16, 25, 36]
    assert isinstance(together[2], ValueError) and "negative: -3" in str(together[2])
    assert jobs_together == 2  # six items of one turn, at most four per job
    assert alone == [49, 64] and jobs == 4


def test_cancelled_callers_are_skipped_and_a_shut_down_executor_fails_its_callers():
    from concurrent.futures import ThreadPoolExecutor

    from server.coalesce import TurnCoalescer

    seen: list[list[int]] = []

    def work(items):
        seen.append(list(items))
        return [x + 1 for x in items]

    async def go():
        pool = ThreadPoolExecutor(1)
        coalescer = TurnCoalescer(pool, work)
        doomed = asyncio.ensure_future(coalescer.run(1))
        kept = asyncio.ensure_future(coalescer.run(2))
        doomed.cancel()
        assert await kept == 3
        pool.shutdown()
        with pytest.raises(RuntimeError, match="shutdown"):
            await coalescer.run(3)

    run(go())
    assert seen == [[2]]


def test_concurrent_searches_share_gallery_calls_with_the_results_of_separate_ones(tmp_path):
    """The requests of a turn that search with the same k and filters are one gallery call;
    each still gets exactly its own results (and its own error)."""
    from server_fakes import MemoryGallery

    from reid.gallery import EntryMetadata, GalleryError, SearchFilters
    from server.errors import BadInputError
    from server.service import SearchOptions, SearchService
    from server.settings import ServerSettings

    class CountingGallery(MemoryGallery):
        def __init__(self) -> None:
            super().__init__()
            self.search_calls: list[int] = []

        def search(self, queries, k=10, filters=None):
            self.search_calls.append(len(queries))
            if np.isnan(queries).any():
                raise GalleryError("NaN query")
            return super().search(queries, k, filters)

    gallery = CountingGallery()
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((20, 8)).astype(np.float32)
    gallery.add(vectors, [EntryMetadata(camera=i % 3) for i in range(20)])
    service = SearchService(ColourRuntime(), gallery, ServerSettings())
    queries = rng.standard_normal((6, 8)).astype(np.float32)
    plain = SearchOptions(k=3)
    filtered = SearchOptions(k=3, filters=SearchFilters(exclude_cameras=frozenset({0})))

    async def go():
        await service.start()
        try:
            options = [plain, plain, filtered, plain, filtered, plain]
            merged = await asyncio.gather(
                *(
                    service.search_embeddings(q[None], o)
                    for q, o in zip(queries, options, strict=True)
                )
            )
            calls = list(gallery.search_calls)
            separate = [
                await service.search_embeddings(q[None], o)
                for q, o in zip(queries, options, strict=True)
            ]
            mixed = await asyncio.gather(
                service.search_embeddings(queries[:1], plain),
                service._search(np.full_like(queries[:1], np.nan), plain, 3),  # gallery refuses
                return_exceptions=True,
            )
            return merged, calls, separate, mixed
        finally:
            await service.close()

    merged, calls, separate, mixed = run(go())
    assert sorted(calls) == [2, 4]  # one call per (k, filters): 4 plain and 2 filtered queries
    assert [[m.id for m in r[0]] for r in merged] == [[m.id for m in r[0]] for r in separate]
    assert [m.id for m in mixed[0][0]] == [m.id for m in separate[0][0]]
    assert isinstance(mixed[1], BadInputError) and "NaN query" in str(mixed[1])


def test_a_request_an_idle_worker_takes_over_does_not_wait_a_second_time():
    runtime = OverlapRuntime(delay=0.02)

    async def go():
        batcher = MicroBatcher(runtime, max_batch=32, max_wait_ms=200, workers=2)
        await batcher.start()
        try:
            start = time.perf_counter()
            early = asyncio.create_task(batcher.embed(images(1, 0.1)))
            await asyncio.sleep(0.18)  # arrives 20 ms before the first one's wait ends
            await batcher.embed(images(1, 0.2))
            late_done = time.perf_counter() - start
            await early
            return late_done
        finally:
            await batcher.stop()

    late_done = run(go())
    assert sorted(runtime.calls) == [1, 1]  # split between the two idle workers
    assert late_done < 0.33  # ~0.2 s wait + one call, not a second 0.2 s wait (~0.4 s)
