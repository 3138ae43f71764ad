"""A `bitnet serve` subprocess on a free loopback port, for tests and benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["ServerProcess"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """Starts ``bitnet serve -m MODEL --port P *args`` and waits until /health says ok.

    The server's log goes to a temporary file (a pipe nobody reads would fill up and stall
    the server); ``log()`` returns it.
    """

    def __init__(self, model: str | os.PathLike[str], *args: str, timeout: float = 60) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bitnet",
                "serve",
                "-m",
                str(Path(model)),
                "--port",
                str(self.port),
                *args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._healthy():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}: {self.log()}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the server was not healthy within {timeout} s: {self.log()}")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def metric(self, name: str) -> float:
        """A sample of /metrics, e.g. ``bitnet_in_flight`` or ``bitnet_requests_total{...}``."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith((name + " ", name + "{")):
                    return float(line.rsplit(" ", 1)[1])
        raise KeyError(name)

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read()

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (drain), then kill after ``timeout``; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode
