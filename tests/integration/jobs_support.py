"""Real Celery job workers for the integration tests: `python -m frontend worker` in a
process group of its own, so a test can SIGKILL the whole worker (main process and pool
child, as a host losing power) or only its pool child (Celery's `reject_on_worker_lost`
path: the main process sees its child die, gives the message back and forks a new one)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from procs.process import with_parent_death_signal
from procs.wait import wait_for

from .conftest import ROOT
from .stack import _wait_group_gone

# Celery logs each task a worker receives by its name.
TASK_LOG = "infergate.jobs.chunk"


def worker_env(
    *,
    database_url: str,
    broker_url: str,
    storage_dir: Path,
    triton_url: str,
    repository: Path,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """What a worker and the frontend beside it share: database, broker, storage, Triton."""
    from .conftest import TEST_SECRET

    return {
        "INFERGATE_ENVIRONMENT": "test",
        "INFERGATE_SECRET_KEY": TEST_SECRET,
        "INFERGATE_DATABASE__URL": database_url,
        "INFERGATE_JOBS__BROKER_URL": broker_url,
        "INFERGATE_JOBS__STORAGE_DIR": str(storage_dir),
        "INFERGATE_TRITON__URL": triton_url,
        "INFERGATE_TRITON__MODEL_REPOSITORY": str(repository),
        **(extra or {}),
    }


class CeleryWorker:
    """One `python -m frontend worker --concurrency 1`; `start` again after `kill`."""

    def __init__(self, env: dict[str, str], log: Path, name: str) -> None:
        self.env = env
        self.log = log
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> CeleryWorker:
        self.starts += 1
        cmd = [sys.executable, "-m", "frontend", "worker", "--concurrency", "1"]
        cmd += ["--hostname", f"{self.name}-{self.starts}@%h", "--loglevel", "info"]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                with_parent_death_signal(cmd),
                cwd=ROOT,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=log,
                start_new_session=True,  # its own group: killpg reaches the pool child too
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def child(self) -> int | None:
        """The pool child's pid (the process running the tasks), None while there is none.
        The main process may be setpriv's exec'd python itself, so its children are read
        from /proc."""
        found: list[int] = []
        for task in Path(f"/proc/{self.pid}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                found += [int(p) for p in task.read_text().split()]
        return found[0] if found else None

    def wait_child(self, timeout_s: float = 120) -> int:
        wait_for(lambda: self.child() is not None, f"{self.name}'s pool child", timeout_s)
        child = self.child()
        assert child is not None
        return child

    def kill(self) -> None:
        """SIGKILL to the main process and its pool child at once."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        _wait_group_gone(self.proc.pid)

    def kill_child(self) -> None:
        """SIGKILL to the pool child only; the main process forks a new one."""
        child = self.child()
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM (Celery's warm shutdown), SIGKILL after 30 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
