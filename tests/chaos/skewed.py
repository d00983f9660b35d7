"""Run `runjobs` in a process whose clock libfaketime shifts: `python skewed.py runjobs ...`.

The chaos script starts it with LD_PRELOAD=libfaketime.so.1, FAKETIME="+600s" and
FAKETIME_DONT_FAKE_MONOTONIC=1, so that only the wall clock (time.time, datetime.now) is
shifted while the monotonic clock that timeouts rely on stays true. libfaketime 0.9.10
(Debian 12) mishandles clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME), which time.sleep
uses from Python 3.11 on, when the monotonic clock is not faked: every time.sleep raises
"OSError: [Errno 22] Invalid argument" (libfaketime issue 426). Faking the monotonic clock
too is no way out: lock and Event timeouts (sem_clockwait) are not intercepted, so they
would wait the whole shift. Hence time.sleep is replaced here, before Django starts, by a
wait on an Event that is never set, which uses the true monotonic clock.
"""

from __future__ import annotations

import sys
import threading
import time

_NEVER = threading.Event()


def _sleep(seconds: float) -> None:
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    _NEVER.wait(seconds)


def main() -> None:
    time.sleep = _sleep
    from django.core.management import execute_from_command_line

    execute_from_command_line(["skewed.py", *sys.argv[1:]])


if __name__ == "__main__":
    main()
