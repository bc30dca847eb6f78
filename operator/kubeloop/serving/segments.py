"""Group commit of feedback samples: many requests, one S3 write, each acknowledged after it.

Samples that arrive while a write is in flight wait together and go out as one segment
(`{prefix}inbox/{ULID}-{n}.jsonl`, api.samples.segment_key): `lanes` writes run at once, each
taking what is waiting, up to `max_samples`. A request is answered only when S3 acknowledged
the segment holding its sample, so an acknowledged sample is stored; one whose request gave
up waiting (a storage outage) is dropped from the queue if its write has not begun. A write
that fails fails every request in it (503, nothing acknowledged), and the next write takes a
new key: a failed write that lands later anyway only holds samples whose senders were told
to send again (at least once, never lost). Throughput grows with concurrency instead of
costing one S3 request per sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from ulid import ULID

from kubeloop.api import samples

log = logging.getLogger(__name__)

Put = Callable[[str, bytes], None]
"""Blocking: store `bytes` at `key`; raises when S3 did not acknowledge it."""


@dataclass
class _Waiting:
    line: bytes
    done: asyncio.Future[str] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class SegmentWriter:
    """Writes the samples of concurrent requests as segments; `write` returns once stored."""

    def __init__(self, put: Put, prefix: str, lanes: int = 4, max_samples: int = 256) -> None:
        self._put = put
        self._prefix = prefix
        self._lanes = lanes
        self._max = max_samples
        self._queue: asyncio.Queue[_Waiting] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def write(self, sample: samples.FeedbackSample, timeout: float) -> str:
        """Store `sample`; the key of its segment. TimeoutError after `timeout`, or the write's
        error: either way the sample is not acknowledged."""
        if self._queue is None:
            self._start()
        assert self._queue is not None
        waiting = _Waiting(sample.model_dump_json(by_alias=True, exclude_none=True).encode())
        await self._queue.put(waiting)
        try:
            return await asyncio.wait_for(asyncio.shield(waiting.done), timeout)
        except TimeoutError:
            waiting.done.cancel()  # not written if its write has not begun
            raise

    async def close(self) -> None:
        """Stop the lanes once the waiting samples are written (or have failed)."""
        if self._queue is not None:
            await self._queue.join()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _start(self) -> None:
        self._queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._lane(), name=f"segments-{n}") for n in range(self._lanes)
        ]

    async def _lane(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            batch = [await queue.get()]
            while len(batch) < self._max and not queue.empty():
                batch.append(queue.get_nowait())
            live = [w for w in batch if not w.done.done()]  # a request may have given up
            try:
                if live:
                    key = samples.segment_key(self._prefix, str(ULID()), len(live))
                    body = b"\n".join(w.line for w in live)
                    try:
                        await asyncio.to_thread(self._put, key, body)
                    except Exception as error:  # every request in it is refused with it
                        for waiting in live:
                            if not waiting.done.done():
                                waiting.done.set_exception(error)
                    else:
                        for waiting in live:
                            if not waiting.done.done():
                                waiting.done.set_result(key)
            finally:
                for _ in batch:
                    queue.task_done()
            with contextlib.suppress(Exception):
                for waiting in live:  # read exceptions nobody awaited (a request gave up)
                    if waiting.done.done() and not waiting.done.cancelled():
                        waiting.done.exception()
