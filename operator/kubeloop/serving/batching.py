"""Server-side micro-batching: concurrent requests share one onnxruntime call.

Requests queue their rows; one worker takes the first waiting request, adds whatever else
arrives until the batch holds `max_batch_size` rows or the first request has waited
`max_latency` (time spent queued behind the previous batch counts, so a busy server adds
no wait at all), runs the batch in its own thread and hands every request its slice.
The wait is only worth it under concurrent load: while the last batch served a single
request, a request that finds the queue empty goes at once (a lone caller would otherwise
pay the whole `max_latency` on every call: bench/README.md, predictor batch 1). A lone
request on a cheap model is not worth the hop to the thread at all: when its caller knows
of no other request in flight, the last run's time per row times its rows is under
`inline_seconds` and no request waits or runs, it runs at once on the event loop (an 8x8
digit takes ~0.05 ms; two thread hand-offs cost more). Under concurrent load batches pay.
Knows nothing of HTTP or of models: `run` maps a batch to something sliceable by rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, Protocol, Self, TypeVar

import numpy as np
from numpy.typing import NDArray


class Sliceable(Protocol):
    def rows(self, start: int, stop: int) -> Self:
        """The part of a batch's output that belongs to rows start..stop."""
        ...


T = TypeVar("T", bound=Sliceable)


class BatcherClosed(RuntimeError):
    """The server is shutting down."""


@dataclass
class _Request(Generic[T]):
    rows: NDArray[np.float32]
    future: asyncio.Future[T]
    queued_at: float = field(default=0.0)


class MicroBatcher(Generic[T]):
    """Collects rows from concurrent callers into batches for `run`."""

    def __init__(
        self,
        run: Callable[[NDArray[np.float32]], T],
        max_batch_size: int,
        max_latency_seconds: float,
        on_batch: Callable[[int], None] | None = None,
        inline_seconds: float = 0.0,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, not {max_batch_size}")
        self._run = run
        self._max_batch_size = max_batch_size
        self._max_latency = max_latency_seconds
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Request[T]] = asyncio.Queue()
        # One thread: batches run one at a time, each using onnxruntime's own thread pool.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self._concurrent = False  # the last batch held more than one request
        self._inline_seconds = inline_seconds
        self._row_seconds = float("inf")  # per row, of the last run; unknown before the first
        self._running = False  # a batch is in the inference thread

    async def submit(self, rows: NDArray[np.float32], alone: bool = False) -> T:
        """The output for `rows` (N inputs), computed in some batch with other callers' rows;
        `alone`: the caller knows of no other request in flight (then a cheap run is inline)."""
        if self._closed:
            raise BatcherClosed("the predictor is shutting down")
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():  # first call, or a worker that died
            self._worker = loop.create_task(self._work(), name="micro-batcher")
        inline = alone and self._row_seconds * len(rows) < self._inline_seconds
        if inline and not self._running and self._queue.empty():
            output = self._timed_run(rows)
            if self._on_batch is not None:
                self._on_batch(len(rows))
            return output
        request: _Request[T] = _Request(rows, loop.create_future(), loop.time())
        self._queue.put_nowait(request)
        return await request.future

    async def close(self) -> None:
        """Stop the worker; callers still waiting get BatcherClosed."""
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        while not self._queue.empty():
            request = self._queue.get_nowait()
            if not request.future.done():
                request.future.set_exception(BatcherClosed("the predictor is shutting down"))
        self._executor.shutdown(wait=False)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        held: _Request[T] | None = None
        while True:
            first = held if held is not None else await self._queue.get()
            batch, held = await self._collect(first, loop)
            batch = [r for r in batch if not r.future.done()]  # callers that gave up
            if not batch:
                continue
            rows = batch[0].rows if len(batch) == 1 else np.concatenate([r.rows for r in batch])
            self._running = True
            try:
                output = await loop.run_in_executor(self._executor, self._timed_run, rows)
            except asyncio.CancelledError:
                for request in [*batch, *([held] if held else [])]:
                    if not request.future.done():
                        request.future.set_exception(BatcherClosed("the predictor stopped"))
                raise
            except Exception as error:  # the batch's callers get the error, the worker lives on
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(error)
                continue
            finally:
                self._running = False
            self._concurrent = len(batch) > 1
            if self._on_batch is not None:
                self._on_batch(len(rows))
            start = 0
            for request in batch:
                stop = start + len(request.rows)
                if not request.future.done():
                    request.future.set_result(output.rows(start, stop))
                start = stop

    def _timed_run(self, rows: NDArray[np.float32]) -> T:
        started = time.perf_counter()
        output = self._run(rows)
        self._row_seconds = (time.perf_counter() - started) / max(1, len(rows))
        return output

    async def _collect(
        self, first: _Request[T], loop: asyncio.AbstractEventLoop
    ) -> tuple[list[_Request[T]], _Request[T] | None]:
        """`first` plus later requests up to the size limit or `first`'s deadline; the
        request that did not fit, if any, is held for the next batch."""
        batch, size = [first], len(first.rows)
        deadline = first.queued_at + self._max_latency
        while size < self._max_batch_size:
            try:
                request = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0 or not (self._concurrent or len(batch) > 1):
                    break
                try:
                    request = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if size + len(request.rows) > self._max_batch_size:
                return batch, request
            batch.append(request)
            size += len(request.rows)
        return batch, None
