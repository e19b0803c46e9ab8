"""The servers under test, each pinned to the same CPU: the floor and the webhook."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench import processes
from bench.backends import Backends
from bench.certs import Certs

SERVER_CPU = "0"


def server_python() -> str:
    """The interpreter the servers run on: BENCH_SERVER_PYTHON, which `make bench` points
    at a virtualenv holding only the runtime dependencies (`pip install .`, as the image
    installs them), else this one. The test tools of a dev virtualenv are not free: the
    kubernetes client imports kubernetes-validate when it is there (+2 MiB RSS)."""
    return os.environ.get("BENCH_SERVER_PYTHON") or sys.executable


@dataclass(slots=True)
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    metrics_port: int | None = None
    served: int = 0  # reviews sent to it so far

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/mutate"

    def stop(self) -> None:
        processes.stop(self.proc)


def start_floor(workdir: Path, certs: Certs) -> Server:
    port = processes.free_port()
    log = workdir / "floor.log"
    cmd = [server_python(), "-m", "bench.floor", "--port", str(port)]
    cmd += ["--cert", str(certs.cert), "--key", str(certs.key)]
    proc = processes.start(cmd, log, cpu=SERVER_CPU, cwd=_repo())
    server = Server("floor", proc, port, log)
    _ready(server)
    return server


def has_webhook() -> bool:
    """Whether `secret-injector serve` exists in this tree."""
    return (_repo() / "webhook" / "cli.py").exists() and (_repo() / "webhook" / "app.py").exists()


def start_webhook(
    workdir: Path,
    certs: Certs,
    backends: Backends,
    verify_mode: str = "warn",
    repo: Path | None = None,
) -> Server:
    """`secret-injector serve --config FILE` as in production, with a policy file; the
    webhook of `repo` (another tree, for bench.ab), this one's by default."""
    repo = repo or _repo()
    port, metrics_port = processes.free_port(), processes.free_port()
    log = workdir / "webhook.log"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KUBERNETES_", "VAULT_", "AWS_")) and key != "KUBECONFIG"
    }
    # No Kubernetes API here: without in-cluster env and kubeconfig the webhook only
    # computes the SecretProviderClasses (a HOME without .kube makes sure of it).
    env.update(backends.env(), HOME=str(workdir), PYTHONPATH=str(repo))
    config = workdir / "config.yaml"
    config.write_text(_config(port, metrics_port, certs, backends, workdir, verify_mode, repo))
    cmd = [server_python(), "-m", "webhook", "serve", "--config", str(config)]
    proc = processes.start(cmd, log, cpu=SERVER_CPU, env=env, cwd=repo)
    server = Server("webhook", proc, port, log, metrics_port=metrics_port)
    _ready(server)
    return server


def _config(
    port: int,
    metrics_port: int,
    certs: Certs,
    backends: Backends,
    workdir: Path,
    verify: str,
    repo: Path,
) -> str:
    lines = [
        f"listen: {{address: 127.0.0.1, port: {port}, "
        f"metricsAddress: 127.0.0.1, metricsPort: {metrics_port}}}",
        f"tls: {{certFile: {certs.cert}, keyFile: {certs.key}}}",
        "annotationPrefix: secret-injector.io",
        "providers:",
        f"  vault: {{address: '{backends.vault_address}', authMountPath: kubernetes, "
        "defaultRole: '{namespace}', auth: {method: token}}",
        "  aws: {region: us-east-1}",
        f"verify: {{mode: {verify}, timeoutSeconds: 1, cacheTTLSeconds: 60, onBackendError: warn}}",
        "kubernetes: {manageSecretProviderClasses: true}",
    ]
    if (repo / "webhook" / "policy_file.py").exists():
        policy = workdir / "policy.yaml"
        policy.write_text(POLICY)
        lines.append(f"policyFile: {policy}")
    return "\n".join(lines) + "\n"


POLICY = """\
# The DESIGN.md default policy, spelled out.
mode: enforce
allowedRefs:
  action: deny
  grants:
    - refs: ["vault:secret/data/{namespace}/*", "aws-sm:{namespace}/*", "aws-ssm:/{namespace}/*"]
plaintextSecrets: deny
secretVolumes: {action: deny, maxMode: "0440"}
envFromSecrets: warn
unknownAnnotations: deny
delivery: deny
"""


def _ready(server: Server) -> None:
    processes.wait_tls(server.port, server.proc, server.log)


def _repo() -> Path:
    return Path(__file__).resolve().parent.parent
