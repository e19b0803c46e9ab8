"""`make run` end to end: real OpenBao and moto servers, the webhook in a subprocess."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import REPO
from webhook import certs


@pytest.mark.slow
def test_devrun_shows_the_example_pod_injected_and_stops_everything(
    python: str, python_env: dict[str, str], dev_certs: certs.CertFiles
) -> None:
    done = subprocess.run(
        [python, "-m", "webhook.devrun", "--once", "--port", "0", "--metrics-port", "0",
         "--certs", str(dev_certs.cert.parent)],
        cwd=REPO, env=python_env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    sections = dict(
        re.findall(r"^=== (mutated pod|SecretProviderClasses)[^\n]*\n(.*?)(?=^=== |\Z)",
                   done.stdout, re.M | re.S)
    )  # fmt: skip
    pod = yaml.safe_load(sections["mutated pod"])
    drivers = [v.get("csi", {}).get("driver") for v in pod["spec"]["volumes"]]
    assert "secrets-store.csi.k8s.io" in drivers
    assert pod["metadata"]["annotations"]["secret-injector.io/status"] == "injected"
    env_names = [e["name"] for e in pod["spec"]["containers"][0]["env"]]
    assert env_names[:1] == ["DB_HOST"] and "API_KEY" in env_names  # user's env kept first
    spcs = list(yaml.safe_load_all(sections["SecretProviderClasses"]))
    assert {spc["spec"]["provider"] for spc in spcs} == {"vault", "aws"}
    assert "allowed: True" in done.stdout
    assert "warning:" not in done.stdout  # every reference verified against the seeded servers
    pids = [int(pid) for pid in re.findall(r"^stopped \S+ \(pid (\d+)\)$", done.stdout, re.M)]
    assert len(pids) == 3
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), f"pid {pid} still runs"


def test_devrun_explains_missing_certificates(
    tmp_path: Path, python: str, python_env: dict[str, str]
) -> None:
    done = subprocess.run(
        [python, "-m", "webhook.devrun", "--once", "--port", "0", "--metrics-port", "0",
         "--certs", str(tmp_path / "none")],
        cwd=REPO, env=python_env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "run `make certs`" in done.stderr


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True
