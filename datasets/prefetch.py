"""Ordered background prefetch: a thread runs an iterator ahead into a bounded queue.

The consumer gets exactly the sequence the iterator gives (one producer, one
FIFO queue), an error in the thread is re-raised in the consumer, and closing
the consumer early (or dropping it) stops and joins the thread.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")

_DONE = object()
_POLL_S = 0.05  # how often a blocked producer checks whether the consumer has gone


class _Failure:
    """An exception raised in the producer thread, carried to the consumer."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def prefetched(items: Iterable[T], depth: int, on_wait: Callable[[float], None]) -> Iterator[T]:
    """Yield `items` in order, produced up to `depth` ahead by one background thread.

    depth 0 produces inline. `on_wait(seconds)` is told how long the consumer
    waited for each item (the data-wait time).
    """
    assert depth >= 0, ("prefetch depth must be >= 0", depth)
    if depth == 0:
        yield from _inline(iter(items), on_wait)
        return

    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - everything goes to the consumer, which re-raises it
            put(_Failure(exc))

    # The thread starts on the first next(), so an iterator never advanced starts nothing.
    thread = threading.Thread(target=produce, name="f1-replay-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            start = time.perf_counter()
            item = slots.get()
            on_wait(time.perf_counter() - start)
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        # Runs on exhaustion, on error, and on close()/garbage collection of this generator.
        stop.set()
        thread.join()


def _inline(iterator: Iterator[T], on_wait: Callable[[float], None]) -> Iterator[T]:
    while True:
        start = time.perf_counter()
        try:
            item = next(iterator)
        except StopIteration:
            return
        on_wait(time.perf_counter() - start)
        yield item
