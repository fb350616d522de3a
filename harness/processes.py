"""Child processes the service starts for itself: started, awaited, always stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


class ComponentFailed(RuntimeError):
    """An embedded component did not start: the message names it and its log file."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_answers(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def wait_until(
    ready: Callable[[], bool], *, component: str, process: subprocess.Popen[bytes], log: Path,
    timeout_seconds: float,
) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ComponentFailed(
                f"{component} exited with code {process.returncode} while starting; see {log}"
            )
        if ready():
            return
        time.sleep(0.1)
    stop_process(process)
    raise ComponentFailed(f"{component} did not answer within {timeout_seconds:.0f}s; see {log}")


def start_process(
    argv: list[str], log: Path, *, user: str | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        # A new session: Ctrl-C in the terminal reaches us, not the child, so we stop it in order.
        # Run in the log's folder: whoever started it can find its children by their cwd.
        return subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, user=user, env=env, cwd=log.parent,
        )


def stop_process(
    process: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, grace_seconds: float = 10.0
) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
        process.wait(grace_seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass
