"""Dynamic micro-batching: concurrent requests share one runtime call.

Requests put their preprocessed ``float32[n, 3, H, W]`` arrays on an asyncio queue;
one worker takes items until ``max_batch`` images are gathered or ``max_wait_ms``
has passed since the first one arrived (so requests that queued behind a busy worker
go as soon as it is free), runs ``runtime.embed`` in a worker thread (never
on the event loop) and hands each request its rows. When a merged call fails, each
request is retried alone so the error reaches only the request that caused it.
With batching disabled every request is its own runtime call.

``workers`` runtime calls may run at once (like Triton's model instances): on a
multi-core CPU with one intra-op thread per call, or on a GPU with several streams,
the next batch is embedded while the previous one still runs. A batch gathers as with
one worker (full, or ``max_wait_ms`` after its first request arrived); then, while other
workers are idle too, it keeps only its even share of the waiting images (32 waiting, 2
idle workers: 16 each; 8 waiting: 4 each) and the rest go at once to the idle workers,
whose wait is over. Triton gives the whole batch to one instance and leaves the other
idle; with one intra-op thread per call that halved ResNet-50's throughput at 8 clients
(docs/BENCHMARKS.md). A runtime that cannot run calls concurrently
(``Runtime.concurrent_calls`` is False: TensorRT's execution context) gets one worker
whatever is asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from reid.runtimes import Runtime
from server.errors import NotReadyError
from server.metrics import Metrics

log = logging.getLogger("server.batching")


@dataclass
class _Item:
    images: np.ndarray
    future: asyncio.Future[np.ndarray]
    enqueued: float = field(default_factory=time.perf_counter)
    deadline: float | None = None  # set when a split batch hands it on: its wait is over


class MicroBatcher:
    """Merges concurrent ``embed`` calls into runtime batches (or not, when disabled)."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        max_batch: int = 32,
        max_wait_ms: float = 2.0,
        enabled: bool = True,
        max_queue: int = 4096,
        metrics: Metrics | None = None,
        workers: int = 1,
    ) -> None:
        self.runtime = runtime
        self.max_batch = max(1, int(max_batch))
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000.0
        self.enabled = enabled
        self.max_queue = max_queue
        self.metrics = metrics or Metrics()
        self.calls = 0  # runtime calls made (tests and logs)
        concurrent = getattr(runtime, "concurrent_calls", True)
        self.workers = max(1, int(workers)) if concurrent else 1
        self._executor = self._new_executor()
        self._slots: asyncio.Semaphore | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._queue: asyncio.Queue[_Item] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._pending: deque[_Item] = deque()  # taken from the queue, not yet batched
        self._queued_images = 0  # queued or being embedded
        self._busy = 0  # workers embedding a batch
        self._busy_images = 0  # images in those batches
        self._running = False

    @property
    def running(self) -> bool:
        return self._running

    async def start(self) -> None:
        """Start the worker in the running event loop (idempotent)."""
        if self._running:
            return
        self._running = True
        if self.enabled:
            self._queue = asyncio.Queue()
            self._slots = asyncio.Semaphore(self.workers)
            self._worker = asyncio.create_task(self._work(), name="micro-batcher")

    async def stop(self) -> None:
        """Refuse new work, finish every queued request, then stop the worker."""
        if not self._running:
            return
        self._running = False
        if self._worker is not None and self._queue is not None:
            await self._queue.join()
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        await asyncio.to_thread(self._executor.shutdown, True)  # in-flight direct calls
        self._executor = self._new_executor()

    def _new_executor(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="embed")

    async def embed(self, images: np.ndarray) -> np.ndarray:
        """``float32[n, 3, H, W]`` -> ``float32[n, D]``, merged with concurrent calls."""
        if not self._running:
            raise NotReadyError("the embedding worker is not running (starting or shutting down)")
        if len(images) == 0:
            return np.zeros((0, self.runtime.embedding_dim), dtype=np.float32)
        if not self.enabled or self._queue is None:
            return await self._run([images])
        if self._queued_images + len(images) > self.max_queue:
            raise NotReadyError(
                f"server overloaded: {self._queued_images} images already queued; retry later"
            )
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queued_images += len(images)
        self.metrics.queue_depth.set(self._queued_images)
        await self._queue.put(_Item(images, future))
        return await future

    async def _run(self, parts: list[np.ndarray]) -> np.ndarray:
        """One runtime call on the merged ``parts`` in the inference thread."""
        batch = parts[0] if len(parts) == 1 else np.concatenate(parts)
        start = time.perf_counter()
        loop = asyncio.get_running_loop()
        out, cpu = await loop.run_in_executor(self._executor, _timed_embed, self.runtime, batch)
        self.calls += 1
        self.metrics.inference_latency.observe(time.perf_counter() - start)
        self.metrics.inference_cpu.inc(cpu)
        self.metrics.batch_size.observe(len(batch))
        self.metrics.batch_requests.observe(len(parts))
        self.metrics.images_embedded.inc(len(batch))
        if out.shape[0] != len(batch):
            raise RuntimeError(f"runtime returned {out.shape[0]} rows for {len(batch)} images")
        return out

    async def _next_batch(self) -> list[_Item]:
        """Wait for one item, then gather more until full or ``max_wait`` after the first
        item arrived; then keep this worker's share (``_keep_share``)."""
        assert self._queue is not None
        first = self._pending.popleft() if self._pending else await self._queue.get()
        items, count = [first], len(first.images)
        # counted from the first item's arrival (Triton's max_queue_delay): when it waited
        # for a busy worker already, what is queued goes at once, with no new wait
        deadline = first.enqueued + self.max_wait if first.deadline is None else first.deadline
        while count < self.max_batch:
            item = self._take_waiting()  # what waits already: no timer, no task
            if item is None:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        item = await self._queue.get()
                except TimeoutError:
                    break
            if count + len(item.images) > self.max_batch:
                self._pending.appendleft(item)  # starts the next batch
                break
            items.append(item)
            count += len(item.images)
        return self._keep_share(items, deadline)

    def _take_waiting(self) -> _Item | None:
        """The next item put back for a later batch, else the next queued one, else None."""
        if self._pending:
            return self._pending.popleft()
        assert self._queue is not None
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def _keep_share(self, items: list[_Item], deadline: float) -> list[_Item]:
        """With other workers idle too, keep only this batch's even share of the waiting
        images (at least its first item) and put the rest back first in line, so the
        idle workers take them at once (their wait is over) instead of idling. The wait
        itself (``max_wait`` from the first arrival) is the same as with one worker."""
        idle = self.workers - self._busy  # this one included
        waiting = self._queued_images - self._busy_images
        if idle <= 1 or len(items) == 1:
            return items
        share = -(-waiting // idle)
        kept, count = [items[0]], len(items[0].images)
        for item in items[1:]:
            if count + len(item.images) > share:
                break
            kept.append(item)
            count += len(item.images)
        rest = items[len(kept) :]
        if rest:
            rest[0].deadline = deadline  # the next batch goes when this one did: no new wait
            self._pending.extendleft(reversed(rest))
        return kept

    async def _work(self) -> None:
        assert self._queue is not None and self._slots is not None
        while True:
            await self._slots.acquire()  # a free worker: only then gather the next batch
            try:
                items = await self._next_batch()
            except BaseException:
                self._slots.release()
                raise
            self._busy += 1
            self._busy_images += sum(len(item.images) for item in items)
            task = asyncio.create_task(self._dispatch_and_release(items))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _dispatch_and_release(self, items: list[_Item]) -> None:
        assert self._queue is not None and self._slots is not None
        try:
            await self._dispatch(items)
        finally:
            self._slots.release()
            self._busy -= 1
            for item in items:
                self._queued_images -= len(item.images)
                self._busy_images -= len(item.images)
                self._queue.task_done()
            self.metrics.queue_depth.set(self._queued_images)

    async def _dispatch(self, items: list[_Item]) -> None:
        live = [item for item in items if not item.future.done()]  # skip cancelled callers
        if not live:
            return
        try:
            out = await self._run([item.images for item in live])
        except Exception as exc:
            if len(live) == 1:
                _settle(live[0].future, error=exc)
                return
            log.info("merged batch of %d requests failed (%s); retrying one by one", len(live), exc)
            for item in live:
                try:
                    _settle(item.future, await self._run([item.images]))
                except Exception as single_exc:
                    _settle(item.future, error=single_exc)
            return
        offset = 0
        for item in live:
            n = len(item.images)
            _settle(item.future, out[offset : offset + n])
            offset += n


def _timed_embed(runtime: Runtime, batch: np.ndarray) -> tuple[np.ndarray, float]:
    """``runtime.embed(batch)`` and the CPU seconds the calling thread spent in it.

    With one intra-op thread onnxruntime and torch compute on the calling thread, so this
    is the runtime's whole CPU cost of the call; threads of a bigger intra-op pool are
    not counted (their work is then counted as the server's own by a process-wide meter).
    """
    start = time.thread_time()
    out = runtime.embed(batch)
    return out, time.thread_time() - start


def _settle(
    future: asyncio.Future[np.ndarray],
    result: np.ndarray | None = None,
    error: BaseException | None = None,
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
