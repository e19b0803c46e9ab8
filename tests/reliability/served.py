"""`secret-injector serve --config FILE` as a user runs it (`python -m webhook`), in a
subprocess: uvloop, JSON logs on stdout, signals. The log lines are read by a thread as
they come, so tests can wait for one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

import webhook

REPO = Path(webhook.__file__).resolve().parents[1]
START_TIMEOUT = 30.0


def python_env(**extra: str) -> dict[str, str]:
    """The test's environment without cloud credentials, the repository importable, no
    Kubernetes configuration (never a real cluster from a test)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "VAULT_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["KUBECONFIG"] = os.devnull
    env.update(extra)
    return env


def write_config(path: Path, cert: Path, key: Path, **sections: Any) -> Path:
    """A config file for 127.0.0.1 on free ports with this certificate pair; `sections`
    are merged in at the top level (camelCase keys, as users write them)."""
    config: dict[str, Any] = {
        "listen": {
            "address": "127.0.0.1",
            "port": 0,
            "metricsAddress": "127.0.0.1",
            "metricsPort": 0,
        },
        "tls": {"certFile": str(cert), "keyFile": str(key), "reloadIntervalSeconds": 0.1},
        "verify": {"mode": "off"},
        "kubernetes": {"manageSecretProviderClasses": False},
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(name), dict):
            config[name] = {**config[name], **value}
        else:
            config[name] = value
    path.write_text(yaml.safe_dump(config))
    return path


class ServeProcess:
    """One `serve` process; `start()` returns once it logged `listening`."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.env = env or python_env()
        self.process: subprocess.Popen[bytes] | None = None
        self.lines: list[dict[str, Any]] = []
        self.stray: list[bytes] = []  # stdout lines that are not JSON
        self._reader: threading.Thread | None = None
        self.port = 0
        self.metrics_port = 0
        self._stderr: str | None = None

    def start(self) -> ServeProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "webhook", "serve", "--config", str(self.config)],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._reader = threading.Thread(target=self._read, name="serve-stdout", daemon=True)
        self._reader.start()
        listening = self.wait_for("listening", START_TIMEOUT)
        self.port = int(str(listening["webhook"]).rsplit(":", 1)[1])
        self.metrics_port = int(str(listening["metrics"]).split(":")[2].split("/")[0])
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for raw in self.process.stdout:
            try:
                self.lines.append(json.loads(raw))
            except ValueError:
                self.stray.append(raw)

    def wait_for(self, message: str, timeout: float = 10.0, after: int = 0) -> dict[str, Any]:
        """The first log line from index `after` on whose `msg` is `message`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[after:]:
                if line.get("msg") == message:
                    return line
            if (
                self.process is not None
                and self.process.poll() is not None
                and not (self._reader is not None and self._reader.is_alive())
            ):
                break
            time.sleep(0.02)
        raise AssertionError(f"no log line {message!r}; stderr: {self.stderr()}; got {self.lines}")

    def stderr(self) -> str:
        """What the process wrote on stderr, once it has exited."""
        if self._stderr is not None:
            return self._stderr
        if self.process is None or self.process.poll() is None:
            return "(still running)"
        self._finish()
        return self._stderr or ""

    def _finish(self) -> None:
        """Read what is left and close the pipes of an exited process."""
        assert self.process is not None
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self.process.stderr is not None and not self.process.stderr.closed:
            self._stderr = self.process.stderr.read().decode(errors="replace")
            self.process.stderr.close()
        if self.process.stdout is not None and not self.process.stdout.closed:
            self.process.stdout.close()

    def signal(self, signum: signal.Signals = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """The exit code; raises subprocess.TimeoutExpired if it takes longer."""
        assert self.process is not None
        code = self.process.wait(timeout)
        self._finish()
        return code

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit within 30 s (by its PID only)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._finish()
