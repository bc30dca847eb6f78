"""Load generators: HTTP clients (aiohttp, keep-alive) and in-process callers (threads).

Each runs `concurrency` closed-loop callers for `seconds` after a short warm-up and
returns every call's latency. Both kinds run in the benchmark process, so on a small
machine the client's own CPU use is part of what a server competes with.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Sequence

import aiohttp

from bench.common import Latencies

WARM_UP_SECONDS = 0.3


class LoadError(RuntimeError):
    """A request got an unexpected status; the message holds its answer."""


def http(
    url: str,
    bodies: Sequence[bytes],
    concurrency: int,
    seconds: float,
    expect: int = 200,
    content_type: str = "application/json",
) -> Latencies:
    """POST the bodies (in turn) to `url` from `concurrency` callers for `seconds`."""
    return asyncio.run(_http(url, bodies, concurrency, seconds, expect, content_type))


async def _http(
    url: str,
    bodies: Sequence[bytes],
    concurrency: int,
    seconds: float,
    expect: int,
    content_type: str,
) -> Latencies:
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    headers = {"Content-Type": content_type}
    counter = itertools.count()
    latencies: list[float] = []
    measuring = False
    async with aiohttp.ClientSession(connector=connector) as session:

        async def caller(deadline: float) -> None:
            while time.perf_counter() < deadline:
                body = bodies[next(counter) % len(bodies)]
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    text = await response.read()
                    if response.status != expect:
                        raise LoadError(f"{url}: {response.status} {text[:300]!r}")
                if measuring:
                    latencies.append(time.perf_counter() - started)

        warm_until = time.perf_counter() + WARM_UP_SECONDS
        await asyncio.gather(*(caller(warm_until) for _ in range(concurrency)))
        measuring = True
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(caller(deadline) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return Latencies(latencies, elapsed)


def calls(
    call: Callable[[int], object], concurrency: int, seconds: float, items: int = 1
) -> Latencies:
    """`call(i)` in a loop from `concurrency` threads for `seconds`; `items` per call."""
    latencies: list[float] = []
    lock = threading.Lock()
    counter = itertools.count()

    def caller(deadline: float, record: bool) -> None:
        mine: list[float] = []
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            call(next(counter))
            mine.append(time.perf_counter() - started)
        if record:
            with lock:
                latencies.extend(mine)

    def run(seconds: float, record: bool) -> float:
        begun = time.perf_counter()
        deadline = begun + seconds
        if concurrency == 1:
            caller(deadline, record)
        else:
            threads = [
                threading.Thread(target=caller, args=(deadline, record)) for _ in range(concurrency)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        return time.perf_counter() - begun

    run(WARM_UP_SECONDS, record=False)
    elapsed = run(seconds, record=True)
    return Latencies(latencies, elapsed, items)
