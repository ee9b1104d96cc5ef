"""One executor job for the blocking work of every request of an event-loop turn.

Under load many requests reach the same step (decode their images, search the gallery)
in the same turn of the event loop: the requests a micro-batch answered wake up
together. Sending each of them to a thread on its own costs a hand-over per request
(a queue, a lock, a wake-up, the GIL changing hands twice) that can cost more than the
work itself (decoding one 128x64 JPEG: ~50 us). :class:`TurnCoalescer` gathers the
items submitted during one turn and hands them to the executor as one job (or a few,
``max_items`` at most each); one request at a time still costs a single hop, as before.
Nothing waits for more work: the job is submitted at the start of the next turn.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Generic, TypeVar

I = TypeVar("I")  # noqa: E741 - the item type
R = TypeVar("R")

Outcome = R | BaseException


def each(fn: Callable[[I], R]) -> Callable[[Sequence[I]], list[Outcome[R]]]:
    """A batch function calling ``fn`` per item; an exception is that item's outcome."""

    def work(items: Sequence[I]) -> list[Outcome[R]]:
        out: list[Outcome[R]] = []
        for item in items:
            try:
                out.append(fn(item))
            except Exception as exc:
                out.append(exc)
        return out

    return work


class TurnCoalescer(Generic[I, R]):
    """``await run(item)``: ``work(items)`` runs in ``executor`` for the items of a turn
    (None: the event loop's default executor, that of ``asyncio.to_thread``).

    ``work`` returns one outcome per item, in order: its result, or the exception that
    item's caller gets (so one bad item fails only its own request); an exception
    raised by ``work`` itself goes to every caller of that job. A caller that was
    cancelled meanwhile is skipped.
    """

    def __init__(
        self,
        executor: Executor | None,
        work: Callable[[Sequence[I]], list[Outcome[R]]],
        *,
        max_items: int = 64,
    ) -> None:
        self.executor = executor
        self.work = work
        self.max_items = max(1, int(max_items))
        self.jobs = 0  # executor jobs submitted (tests, metrics)
        self._pending: list[tuple[I, asyncio.Future[R]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self, item: I) -> R:
        """``item``'s outcome: its result, or its exception raised here."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        if not self._pending:
            self._loop = loop
            loop.call_soon(self._flush)
        self._pending.append((item, future))
        return await future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        live = [(item, future) for item, future in pending if not future.done()]
        loop = self._loop
        assert loop is not None
        for start in range(0, len(live), self.max_items):
            chunk = live[start : start + self.max_items]
            try:
                job = loop.run_in_executor(self.executor, self.work, [item for item, _ in chunk])
            except RuntimeError as exc:  # the executor was shut down
                for _, future in chunk:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.jobs += 1
            job.add_done_callback(functools.partial(_settle, [f for _, f in chunk]))


def _settle(futures: list[asyncio.Future[R]], job: asyncio.Future[list[Outcome[R]]]) -> None:
    if job.cancelled():
        for future in futures:
            future.cancel()
        return
    error = job.exception()
    outcomes: Sequence[Outcome[R]] = [error] * len(futures) if error else job.result()
    if len(outcomes) != len(futures):
        outcomes = [RuntimeError(f"{len(outcomes)} outcomes for {len(futures)} items")] * len(
            futures
        )
    for future, outcome in zip(futures, outcomes, strict=True):
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
