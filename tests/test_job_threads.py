"""The worker's job threads (worker/threads.py): what close() and withdraw() promise."""

from __future__ import annotations

import threading

from django_jobs.worker.threads import JobThreads


def _one_thread_held_up() -> tuple[JobThreads[str], list[str], threading.Event]:
    """One thread running a "long" item until the event is set, two items claimed ahead
    waiting behind it, and the list of the items run so far."""
    release = threading.Event()
    ran: list[str] = []

    def run(item: str) -> None:
        ran.append(item)
        if item == "long":
            release.wait(5)

    threads = JobThreads(1, run, "test")
    threads.submit("long", 1)
    for n, item in enumerate(["ahead-1", "ahead-2"], start=2):
        threads.submit(item, n)  # claimed ahead: they wait for the one thread
    while not ran:
        pass
    return threads, ran, release


def test_after_close_no_queued_item_starts_and_the_running_one_ends():
    threads, ran, release = _one_thread_held_up()
    threads.close()  # the worker is about to hand the queued jobs back
    release.set()
    threads.shutdown()
    assert ran == ["long"]


def test_without_close_the_queued_items_run_in_order():
    ran: list[int] = []
    threads = JobThreads(2, ran.append, "test")
    for n in range(1, 6):
        threads.submit(n, n)
    threads.shutdown()
    assert sorted(ran) == [1, 2, 3, 4, 5]


def test_withdraw_takes_the_queued_items_and_none_of_them_starts():
    threads, ran, release = _one_thread_held_up()
    assert threads.waiting() == 2
    # The worker hands the jobs claimed ahead back: the pool gives them up, in their order.
    assert threads.withdraw() == ["ahead-1", "ahead-2"]
    assert threads.waiting() == 0 and threads.withdraw() == []
    threads.submit("after", 2)  # the threads carry on with what comes next
    release.set()
    threads.shutdown()
    assert ran == ["long", "after"]
