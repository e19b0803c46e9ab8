"""The command line as a user runs it: `python -m webhook ...` in a subprocess."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import signal
import ssl
import stat
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tests.integration.reviews import admission_review, pod
from webhook import certs


def run(
    python: str, env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-m", "webhook", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# ---------------------------------------------------------------------------- certs


def test_certs_writes_a_ca_and_a_serving_pair_for_the_service(
    tmp_path: Path, python: str, python_env: dict[str, str]
) -> None:
    out = tmp_path / "dev"
    done = run(
        python, python_env, "certs", "--out", str(out), "--service", "hook", "--namespace", "ns"
    )
    assert done.returncode == 0, done.stderr
    files = certs.CertFiles.under(out)
    for key in (files.key, files.ca_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.curve.name == "secp256r1"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [
        "hook",
        "hook.ns",
        "hook.ns.svc",
        "hook.ns.svc.cluster.local",
        "localhost",
    ]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_certs_keeps_current_files_and_renews_for_other_names(
    tmp_path: Path, python: str, python_env: dict[str, str]
) -> None:
    out = str(tmp_path / "dev")
    files = certs.CertFiles.under(out)
    assert run(python, python_env, "certs", "--out", out).returncode == 0
    first = {path: path.read_bytes() for path in (files.ca_cert, files.cert)}
    again = run(python, python_env, "certs", "--out", out)
    assert "up to date" in again.stdout
    assert {path: path.read_bytes() for path in first} == first
    renamed = run(python, python_env, "certs", "--out", out, "--service", "other")
    assert "written" in renamed.stdout
    assert files.ca_cert.read_bytes() == first[files.ca_cert]  # the trusted CA stays
    assert files.cert.read_bytes() != first[files.cert]
    forced = run(python, python_env, "certs", "--out", out, "--force")
    assert forced.returncode == 0
    assert files.ca_cert.read_bytes() != first[files.ca_cert]


# ---------------------------------------------------------------------------- check-config


@pytest.mark.parametrize(
    ("text", "code", "message"),
    [
        pytest.param("listen: {port: 8443}\nverify: {mode: enforce}\n", 0, "ok", id="valid"),
        pytest.param("", 0, "ok", id="empty-means-defaults"),
        pytest.param(
            "listen:\n  prot: 8443\n",
            1,
            ":2: listen.prot: unknown key (did you mean port?)",
            id="typo",
        ),
        pytest.param(
            "verify:\n  mode: sometimes\n",
            1,
            ":2: verify.mode: must be one of off | warn | enforce",
            id="bad-enum",
        ),
        pytest.param(
            "listen:\n  port: '8443'\n",
            1,
            ":2: listen.port: must be an integer, got a string",
            id="bad-type",
        ),
        pytest.param(
            "listen:\n  port: 70000\n", 1, "port must be between 0 and 65535", id="bad-range"
        ),
        pytest.param("listen: [1, 2\n", 1, "not valid YAML", id="not-yaml"),
    ],
)
def test_check_config_reports_precise_errors(
    tmp_path: Path, python: str, python_env: dict[str, str], text: str, code: int, message: str
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(text)
    done = run(python, python_env, "check-config", "--config", str(config))
    assert done.returncode == code
    assert message in (done.stdout if code == 0 else done.stderr)
    if code:
        assert str(config) in done.stderr


def test_check_config_of_a_missing_file_fails(
    tmp_path: Path, python: str, python_env: dict[str, str]
) -> None:
    done = run(python, python_env, "check-config", "--config", str(tmp_path / "nope.yaml"))
    assert done.returncode == 1
    assert "cannot read" in done.stderr


def test_usage_errors_exit_2(python: str, python_env: dict[str, str]) -> None:
    assert run(python, python_env).returncode == 2
    assert run(python, python_env, "explain").returncode == 2
    assert run(python, python_env, "frobnicate").returncode == 2


# ---------------------------------------------------------------------------- explain

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "shop"},
    "spec": {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
        },
    },
}
SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web"},
    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
}


def test_explain_prints_objects_without_opt_in_unchanged(
    tmp_path: Path, python: str, python_env: dict[str, str]
) -> None:
    manifest = tmp_path / "app.yaml"
    manifest.write_text(yaml.safe_dump_all([DEPLOYMENT, SERVICE]))
    done = run(python, python_env, "explain", "-f", str(manifest))
    assert done.returncode == 0, done.stderr
    assert list(yaml.safe_load_all(done.stdout)) == [DEPLOYMENT, SERVICE]
    assert "Deployment/web: not opted in" in done.stderr
    assert "Service/web: not a Pod or a workload" in done.stderr


def test_explain_reads_stdin(python: str, python_env: dict[str, str]) -> None:
    done = run(python, python_env, "explain", "-f", "-", stdin=yaml.safe_dump(SERVICE))
    assert done.returncode == 0, done.stderr
    assert list(yaml.safe_load_all(done.stdout)) == [SERVICE]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param("kind: [", "not valid YAML", id="not-yaml"),
        pytest.param("- a\n- b\n", "document 1 is not a Kubernetes object", id="a-list"),
        pytest.param("", "no Kubernetes objects", id="empty"),
        pytest.param(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: w}\nspec: {}\n",
            "spec.template is missing",
            id="no-template",
        ),
        pytest.param(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: {}}\n",
            "containers must be a list",
            id="bad-pod",
        ),
    ],
)
def test_explain_rejects_unreadable_input_with_exit_2(
    tmp_path: Path, python: str, python_env: dict[str, str], content: str, message: str
) -> None:
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(content)
    done = run(python, python_env, "explain", "-f", str(manifest))
    assert done.returncode == 2
    assert message in done.stderr


def test_explain_of_a_missing_file_exits_2(python: str, python_env: dict[str, str]) -> None:
    done = run(python, python_env, "explain", "-f", "/nonexistent/app.yaml")
    assert (done.returncode, "cannot read" in done.stderr) == (2, True)


# ---------------------------------------------------------------------------- serve


async def read_json_line(stream: asyncio.StreamReader) -> dict[str, Any]:
    line = await asyncio.wait_for(stream.readline(), timeout=30)
    assert line, "the server closed its stdout"
    entry: dict[str, Any] = json.loads(line)
    return entry


async def test_serve_logs_json_only_answers_and_exits_0_on_sigterm(
    tmp_path: Path, python: str, python_env: dict[str, str], dev_certs: certs.CertFiles
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "listen": {
                    "address": "127.0.0.1",
                    "port": 0,
                    "metricsAddress": "127.0.0.1",
                    "metricsPort": 0,
                },
                "tls": {"certFile": str(dev_certs.cert), "keyFile": str(dev_certs.key)},
            }
        )
    )
    process = await asyncio.create_subprocess_exec(
        python, "-m", "webhook", "serve", "--config", str(config),
        env=python_env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    try:
        lines = [await read_json_line(process.stdout)]
        while lines[-1]["msg"] != "listening":
            lines.append(await read_json_line(process.stdout))
        url = lines[-1]["webhook"].replace("127.0.0.1", "localhost")
        context = ssl.create_default_context(cafile=str(dev_certs.ca_cert))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
            review = admission_review(pod(), operation="DELETE")
            async with session.post(f"{url}/mutate", json=review) as response:
                assert (await response.json())["response"]["allowed"] is True
            async with session.get(f"{lines[-1]['metrics']}") as response:
                assert "secret_injector_reviews_total" in await response.text()
        audit = await read_json_line(process.stdout)
        assert (audit["decision"], audit["uid"]) == ("allowed", review["request"]["uid"])
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), timeout=30)
    rest, errors = await process.stdout.read(), await process.stderr.read()
    assert code == 0, errors
    for line in rest.decode().splitlines():
        json.loads(line)  # nothing but JSON lines on stdout
    assert errors == b""


def test_serve_refuses_a_world_readable_key(
    tmp_path: Path, python: str, python_env: dict[str, str], dev_certs: certs.CertFiles
) -> None:
    os.chmod(dev_certs.key, 0o644)
    config = tmp_path / "config.yaml"
    config.write_text(
        f"listen: {{address: 127.0.0.1, port: 0, metricsAddress: 127.0.0.1, metricsPort: 0}}\n"
        f"tls: {{certFile: {dev_certs.cert}, keyFile: {dev_certs.key}}}\n"
    )
    done = run(python, python_env, "serve", "--config", str(config))
    assert done.returncode == 1
    assert "world-readable (mode 0644)" in done.stderr


def test_serve_reports_a_bad_config_with_its_line(
    tmp_path: Path, python: str, python_env: dict[str, str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("tls:\n  certfile: x\n")
    done = run(python, python_env, "serve", "--config", str(config))
    assert done.returncode == 1
    assert f"{config}:2: tls.certfile: unknown key (did you mean certFile?)" in done.stderr
