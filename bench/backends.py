"""Real OpenBao (dev mode) and moto servers, seeded with the secrets the bodies reference."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import boto3

from bench import bodies, processes
from webhook.devrun import find_tool

REGION = "us-east-1"


@dataclass(slots=True)
class Backends:
    bao: subprocess.Popen[bytes]
    moto: subprocess.Popen[bytes]
    vault_address: str
    vault_token: str
    aws_endpoint: str

    def env(self) -> dict[str, str]:
        """The environment a client of these servers needs (the backends' standard names)."""
        return {
            "VAULT_ADDR": self.vault_address,
            "VAULT_TOKEN": self.vault_token,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_ENDPOINT_URL_SECRETS_MANAGER": self.aws_endpoint,
            "AWS_ENDPOINT_URL_SSM": self.aws_endpoint,
        }

    def stop(self) -> None:
        processes.stop(self.bao)
        processes.stop(self.moto)


def start(workdir: Path, cpu: str) -> Backends:
    """Start both servers on free ports, pinned to `cpu`, and seed `bodies.SEED`."""
    bao_bin = find_tool("bao")
    moto_bin = find_tool("moto_server")
    token = secrets.token_hex(16)
    bao_port, moto_port = processes.free_port(), processes.free_port()
    bao_log, moto_log = workdir / "bao.log", workdir / "moto.log"
    bao = processes.start(
        [
            bao_bin,
            "server",
            "-dev",
            f"-dev-root-token-id={token}",
            f"-dev-listen-address=127.0.0.1:{bao_port}",
        ],
        bao_log,
        cpu=cpu,
        env={**os.environ, "HOME": str(workdir)},
    )
    moto = processes.start([moto_bin, "-H", "127.0.0.1", "-p", str(moto_port)], moto_log, cpu=cpu)
    backends = Backends(
        bao, moto, f"http://127.0.0.1:{bao_port}", token, f"http://127.0.0.1:{moto_port}"
    )
    try:
        processes.wait_tcp(bao_port, bao, bao_log)
        processes.wait_tcp(moto_port, moto, moto_log)
        _seed_vault(backends, bodies.SEED.vault.items())
        _seed_aws(backends)
    except BaseException:
        backends.stop()
        raise
    return backends


def seed_cold(backends: Backends, names: Iterable[str]) -> int:
    """Create one OpenBao secret per cold name; returns how many."""
    items = [(bodies.cold_path(name), {bodies.COLD_KEY: "cold"}) for name in names]
    _seed_vault(backends, items)
    return len(items)


def _seed_vault(backends: Backends, items: Iterable[tuple[str, object]]) -> None:
    host = backends.vault_address.removeprefix("http://")
    conn = http.client.HTTPConnection(host, timeout=10)
    headers = {"X-Vault-Token": backends.vault_token, "Content-Type": "application/json"}
    try:
        for path, data in items:
            conn.request("POST", f"/v1/{path}", body=json.dumps({"data": data}), headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status not in (200, 204):
                raise RuntimeError(f"OpenBao refused {path}: {resp.status} {body[:200]!r}")
    finally:
        conn.close()


def _seed_aws(backends: Backends) -> None:
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    sm = session.client("secretsmanager", endpoint_url=backends.aws_endpoint)
    for name, value in bodies.SEED.aws_secrets.items():
        sm.create_secret(Name=name, SecretString=value)
    ssm = session.client("ssm", endpoint_url=backends.aws_endpoint)
    for name, value in bodies.SEED.aws_parameters.items():
        ssm.put_parameter(Name=name, Value=value, Type="SecureString")
