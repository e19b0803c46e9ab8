"""The webhook as users run it: `python -m webhook serve --config FILE` in a subprocess.

stdout and stderr go to files (a pipe nobody reads would fill and block the server), so
tests can read everything the process ever printed. The listening ports come from the
process's own "listening" log line (it binds port 0).
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

import webhook
from webhook import certs

REPO = Path(webhook.__file__).resolve().parents[1]
START_TIMEOUT = 60.0


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment without cloud or Kubernetes settings, the repo importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "VAULT_", "BAO_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONFAULTHANDLER"] = "1"
    env["KUBECONFIG"] = os.devnull  # never a real cluster: SPCs are computed and logged
    env.pop("KUBERNETES_SERVICE_HOST", None)
    env.update(extra or {})
    return env


def aws_env(secrets_manager: str, ssm: str) -> dict[str, str]:
    """Standard AWS variables pointing boto3 at test endpoints with fake credentials."""
    return {
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": secrets_manager,
        "AWS_ENDPOINT_URL_SSM": ssm,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


class WebhookProcess:
    """One `secret-injector serve` process on 127.0.0.1, ports chosen by the system."""

    def __init__(
        self, workdir: Path, config: Mapping[str, Any], env: Mapping[str, str] | None = None
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.certs, _ = certs.write_dev_certs(workdir / "certs")
        self.config_file = workdir / "config.yaml"
        full = {
            "listen": {
                "address": "127.0.0.1",
                "port": 0,
                "metricsAddress": "127.0.0.1",
                "metricsPort": 0,
            },
            "tls": {"certFile": str(self.certs.cert), "keyFile": str(self.certs.key)},
            **config,
        }
        self.config_file.write_text(yaml.safe_dump(full, sort_keys=False))
        self.env = base_env(env)
        self.stdout_file = workdir / "stdout.log"
        self.stderr_file = workdir / "stderr.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.webhook_url = ""
        self.metrics_url = ""
        self.exit_code: int | None = None

    def start(self) -> None:
        with self.stdout_file.open("wb") as out, self.stderr_file.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "webhook", "serve", "--config", str(self.config_file)],
                stdout=out,
                stderr=err,
                env=self.env,
                cwd=self.workdir,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            complete = self.stdout().rpartition("\n")[0]  # not a line being written
            for line in complete.splitlines():
                entry = json.loads(line)
                if entry.get("msg") == "listening":
                    # The dev certificate names localhost, not the address.
                    self.webhook_url = entry["webhook"].replace("127.0.0.1", "localhost")
                    self.metrics_url = entry["metrics"]
                    return
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited early:\n{self.stdout()}\n{self.stderr()}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"serve did not listen within {START_TIMEOUT}s:\n{self.stderr()}")

    def stop(self) -> int:
        """SIGTERM, wait for a graceful exit; the exit code."""
        if self.process is None:
            return -1
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                # Hung: SIGABRT makes faulthandler print every thread's stack to stderr.
                self.process.send_signal(signal.SIGABRT)
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=10)
        self.exit_code = self.process.returncode
        return self.exit_code

    def stdout(self) -> str:
        return self.stdout_file.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_file.read_text(errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        """stdout as JSON objects; raises if any line is not one."""
        entries = []
        for number, line in enumerate(self.stdout().splitlines(), 1):
            entry = json.loads(line)
            if not isinstance(entry, dict):
                raise ValueError(f"stdout line {number} is JSON but not an object: {line}")
            entries.append(entry)
        return entries

    def session(self) -> aiohttp.ClientSession:
        """An HTTPS session to the webhook trusting only its dev CA (name checked)."""
        context = ssl.create_default_context(cafile=str(self.certs.ca_cert))
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=32),
            timeout=aiohttp.ClientTimeout(total=30),
        )


class Exchange:
    """One request to the webhook and its answer, raw."""

    def __init__(self, endpoint: str, sent: bytes, status: int, body: bytes) -> None:
        self.endpoint = endpoint
        self.sent = sent
        self.status = status
        self.body = body

    def json(self) -> Any:
        return orjson.loads(self.body)


async def post(
    session: aiohttp.ClientSession,
    url: str,
    endpoint: str,
    body: bytes | Mapping[str, Any],
    content_type: str = "application/json",
) -> Exchange:
    """POST `body` (a mapping is JSON-encoded) to `url/endpoint`."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with session.post(
        f"{url}/{endpoint}", data=data, headers={"Content-Type": content_type}
    ) as response:
        return Exchange(endpoint, data, response.status, await response.read())


async def scrape(session: aiohttp.ClientSession, metrics_url: str) -> str:
    async with session.get(metrics_url) as response:
        assert response.status == 200
        return await response.text()
