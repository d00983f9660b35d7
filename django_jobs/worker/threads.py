"""The threads that run a worker's jobs: a queue and up to `size` threads, started as needed.

Lighter than a ThreadPoolExecutor on the hot path: no Future (with its Condition and its
locks) per job, since the worker takes each job's outcome through its own report callback.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class JobThreads(Generic[T]):
    """Runs `run(item)` for each submitted item on one of at most `size` threads."""

    def __init__(self, size: int, run: Callable[[T], None], name: str) -> None:
        self._size = size
        self._run = run
        self._name = name
        self._items: queue.SimpleQueue[T | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._gate = threading.Lock()  # a thread takes it to start an item; close() to close
        self._closed = False
        # The submitted items no thread has started yet, by id() (the queue keeps each alive,
        # so no two share one); withdraw() takes them back.
        self._waiting: dict[int, T] = {}

    def submit(self, item: T, in_flight: int) -> None:
        """Hand `item` to a thread; `in_flight` is how many submitted items have not ended,
        this one included: the threads grow to that number, up to `size`."""
        self._waiting[id(item)] = item  # one dict operation, atomic: no lock on the hot path
        self._items.put(item)
        if len(self._threads) < min(self._size, in_flight):
            thread = threading.Thread(
                target=self._serve, name=f"{self._name}_{len(self._threads)}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _serve(self) -> None:
        while True:
            item = self._items.get()
            with self._gate:
                if item is None or self._closed:
                    return
                if self._waiting.pop(id(item), None) is None:
                    continue  # withdrawn: the worker handed its job back
            self._run(item)

    def waiting(self) -> int:
        """How many submitted items wait for a thread."""
        return len(self._waiting)

    def withdraw(self) -> list[T]:
        """The submitted items no thread has started, in the order submitted; none of them
        will start (the caller hands their jobs back)."""
        items = []
        with self._gate:
            for key in list(self._waiting):
                # One pop each, as a starting thread's: an item submitted meanwhile stays.
                item = self._waiting.pop(key, None)
                if item is not None:
                    items.append(item)
        return items

    def close(self) -> None:
        """Start nothing more: once this returns, no thread starts an item still queued (the
        caller hands their jobs back). Items already started run on."""
        with self._gate:
            self._closed = True

    def shutdown(self) -> None:
        """Let each thread finish what it runs and the items queued before, then end it."""
        for _ in self._threads:
            self._items.put(None)
        for thread in self._threads:
            thread.join()
