"""The chaos script's workers: real `runjobs` subprocesses, some under a shifted clock."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKEWED_LAUNCHER = Path(__file__).resolve().parent / "skewed.py"
FAKETIME_LIBRARIES = (
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
    "/usr/local/lib/faketime/libfaketime.so.1",
)
PR_SET_PDEATHSIG = 1


def find_libfaketime() -> str | None:
    for path in FAKETIME_LIBRARIES:
        if os.path.exists(path):
            return path
    return None


def install_faketime(say: Callable[[str], None]) -> str | None:
    """libfaketime's path, installing Debian's faketime package first if it is missing."""
    found = find_libfaketime()
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    say("libfaketime is missing: apt-get install -y faketime")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "faketime"]
    try:
        if subprocess.run(install, timeout=300, **quiet).returncode != 0:  # type: ignore[call-overload]
            subprocess.run(["apt-get", "update", "-qq"], timeout=300, **quiet)  # type: ignore[call-overload]
            subprocess.run(install, timeout=300, **quiet)  # type: ignore[call-overload]
    except subprocess.TimeoutExpired:
        pass
    return find_libfaketime()


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the chaos script dies, however it dies."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class WorkerProcess:
    """One `runjobs` process of a slot (a slot keeps its clock skew across replacements)."""

    slot: int
    generation: int
    skew: int  # seconds this process's wall clock is shifted by
    proc: subprocess.Popen[bytes]
    log_path: Path
    started: float = field(default_factory=time.monotonic)
    exit_code: int | None = None
    ended_at: datetime | None = None  # the database's clock when its death was seen
    ended_by: str = ""  # "kill -9", "SIGTERM", or "exit" for a death nobody asked for

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def name(self) -> str:
        skew = f", clock {self.skew:+d}s" if self.skew else ""
        return f"worker {self.slot}.{self.generation} (pid {self.pid}{skew})"

    def output(self, lines: int = 12) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class WorkerPool:
    """Start, kill, replace and finally stop the chaos script's workers."""

    def __init__(
        self,
        *,
        runjobs_args: list[str],
        env: dict[str, str],
        log_dir: Path,
        skews: list[int],
        libfaketime: str | None,
        db_now: Callable[[], datetime],
    ) -> None:
        self.runjobs_args = runjobs_args
        self.env = env
        self.log_dir = log_dir
        self.skews = skews
        self.libfaketime = libfaketime
        self.db_now = db_now
        self.all: list[WorkerProcess] = []
        self.current: dict[int, WorkerProcess] = {}
        self._generations: dict[int, int] = {}

    def start(self, slot: int) -> WorkerProcess:
        generation = self._generations.get(slot, 0)
        self._generations[slot] = generation + 1
        skew = self.skews[slot] if slot < len(self.skews) else 0
        env = dict(self.env)
        args = [*self.runjobs_args, "--worker-id", f"chaos-{slot}.{generation}"]
        if skew and self.libfaketime:
            preload = env.get("LD_PRELOAD", "")
            env["LD_PRELOAD"] = f"{self.libfaketime} {preload}".strip()
            env["FAKETIME"] = f"{skew:+d}s"
            env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
            command = [sys.executable, str(SKEWED_LAUNCHER), "runjobs", *args]
        else:
            skew = 0
            command = [sys.executable, "-m", "django", "runjobs", *args]
        log_path = self.log_dir / f"worker-{slot}.{generation}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                command,
                env=env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Ctrl-C reaches the script alone, which then stops every worker itself.
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        worker = WorkerProcess(slot, generation, skew, proc, log_path)
        self.all.append(worker)
        self.current[slot] = worker
        return worker

    def alive(self) -> list[WorkerProcess]:
        return [w for w in self.current.values() if w.exit_code is None]

    def reap(self) -> list[WorkerProcess]:
        """Workers that died by themselves since the last look (none was asked to)."""
        died = []
        for worker in self.alive():
            code = worker.proc.poll()
            if code is not None:
                self._ended(worker, code, "exit")
                died.append(worker)
        return died

    def kill(self, worker: WorkerProcess) -> None:
        """kill -9, and note when it died by the database's clock."""
        with contextlib.suppress(ProcessLookupError):
            worker.proc.send_signal(signal.SIGKILL)
        code = worker.proc.wait(30)
        self._ended(worker, code, "kill -9")

    def terminate_all(self, timeout: float) -> None:
        """SIGTERM every live worker; kill -9 those still up after `timeout` seconds."""
        live = self.alive()
        for worker in live:
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for worker in live:
            try:
                code = worker.proc.wait(max(0.1, deadline - time.monotonic()))
                self._ended(worker, code, "SIGTERM")
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                code = worker.proc.wait(30)
                self._ended(worker, code, "SIGTERM, then kill -9 after the grace period")

    def kill_all(self) -> None:
        """On the way out, whatever happened: no worker may outlive the script."""
        for worker in self.all:
            if worker.proc.poll() is None:
                try:
                    os.killpg(worker.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    worker.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.proc.wait(10)

    def _ended(self, worker: WorkerProcess, code: int, by: str) -> None:
        worker.exit_code = code
        worker.ended_by = by
        try:
            worker.ended_at = self.db_now()
        except Exception:  # the report then uses the end of the run for its executions
            worker.ended_at = None
