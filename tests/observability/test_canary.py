"""No canary value leaves the backends: not in logs, metrics, responses, patches or messages.

The canary run (conftest.py) stores random values in real OpenBao and moto, sends a few
hundred reviews of every kind through `secret-injector serve` (injected, reinvoked,
warned, denied by policy, denied for a bad annotation, plaintext secrets in env, malformed
bodies, other operations and kinds, then Vault down), and records everything.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from typing import Any

import orjson
import pytest

from tests.observability.canaries import Canaries, new_canary
from tests.observability.canary_run import CanaryRun
from tests.servers import BaoServer, MotoServer


def _patches(run: CanaryRun) -> list[Any]:
    return [
        orjson.loads(base64.b64decode(response["patch"]))
        for _, response in run.reviews()
        if "patch" in response
    ]


def _messages(run: CanaryRun) -> list[str]:
    """What a person reads: denial messages, warnings, HTTP error messages."""
    found: list[str] = []
    for _, response in run.reviews():
        found += response.get("warnings", [])
        if "status" in response:
            found.append(response["status"]["message"])
    for exchange in run.exchanges:
        if exchange.status >= 400:
            found.append(json.loads(exchange.body)["message"])
    return found


def channel(run: CanaryRun, name: str) -> str:
    if name == "stdout":
        return run.stdout
    if name == "stderr":
        return run.stderr
    if name == "metrics":
        return run.metrics
    if name == "responses":
        return "\n".join(e.body.decode("latin-1") for e in run.exchanges)
    if name == "patches":
        return json.dumps(_patches(run))
    assert name == "messages"
    return "\n".join(_messages(run))


@pytest.mark.parametrize(
    "name", ["stdout", "stderr", "metrics", "responses", "patches", "messages"]
)
def test_canary_values_appear_nowhere(canary_run: CanaryRun, name: str) -> None:
    assert canary_run.canaries.leaks(channel(canary_run, name)) == []


def test_canary_channels_were_not_empty(canary_run: CanaryRun) -> None:
    """The places searched did hold output (stderr of a clean run is empty)."""
    assert len(canary_run.stdout.splitlines()) > 400
    assert canary_run.stderr == ""
    assert "secret_injector_reviews_total" in canary_run.metrics
    assert len(_patches(canary_run)) >= 60
    assert len(_messages(canary_run)) >= 100


def test_canary_detector_finds_plain_cut_and_base64_values() -> None:
    canaries = Canaries("ns", *(new_canary("x") for _ in range(6)))
    value = canaries.vault_db
    cut = value[:9] + "..." + value[-9:]  # an echo shortened to fit a line
    assert canaries.leaks(f"password={value}") == ["vault_db"]
    assert canaries.leaks(f"...{cut}...") == ["vault_db"]
    for prefix in ("", "a", "ab"):
        encoded = base64.b64encode(f'{prefix}{{"v":"{value}"}}'.encode()).decode()
        assert canaries.leaks(encoded) == ["vault_db"], prefix
    assert canaries.leaks(new_canary("x") + value[:14] + " " + value[-7:]) == []


def test_canary_values_are_what_the_backends_hold(
    canary_run: CanaryRun, openbao: BaoServer, moto: MotoServer
) -> None:
    """The references the pods used lead to the canaries (read here with admin rights)."""
    canaries = canary_run.canaries
    ns = canaries.namespace
    kv = openbao.client().secrets.kv.v2
    assert kv.read_secret_version(path=f"{ns}/db", raise_on_deleted_version=True)["data"][
        "data"
    ] == {"password": canaries.vault_db}
    sm = moto.client("secretsmanager")
    assert json.loads(sm.get_secret_value(SecretId=f"{ns}/api-key")["SecretString"]) == {
        "apiKey": canaries.sm_json
    }
    assert sm.get_secret_value(SecretId=f"{ns}/plain")["SecretString"] == canaries.sm_plain
    parameter = moto.client("ssm").get_parameter(Name=f"/{ns}/db-url", WithDecryption=True)
    assert parameter["Parameter"]["Value"] == canaries.ssm


def test_canary_run_covered_every_kind_of_review(canary_run: CanaryRun) -> None:
    answers: Counter[str] = Counter()
    for _, response in canary_run.reviews():
        if response["allowed"]:
            answers["patched" if "patch" in response else "allowed"] += 1
            answers["with warnings"] += bool(response.get("warnings"))
        else:
            answers[f"denied {response['status']['code']}"] += 1
    http = Counter(e.status for e in canary_run.exchanges if e.status != 200)
    assert answers["patched"] >= 60
    assert answers["with warnings"] >= 20  # missing references, verify mode warn
    assert answers["denied 403"] >= 60  # another tenant's paths, plaintext secrets
    assert answers["denied 400"] >= 20  # annotation errors
    assert answers["denied 503"] == 30  # Vault down (onBackendError: deny)
    assert (http[400], http[413], http[415]) == (28, 4, 4)  # malformed bodies
    assert canary_run.exit_code == 0
    sent_plaintext = sum(
        canary_run.canaries.plaintext.encode() in e.sent for e in canary_run.exchanges
    )
    assert sent_plaintext >= 80  # the webhook did see that canary, often


def test_canary_plaintext_env_is_denied_by_name_without_its_value(canary_run: CanaryRun) -> None:
    secret = canary_run.canaries.plaintext.encode()
    denied = [
        response["status"]["message"]
        for exchange, response in canary_run.reviews()
        if secret in exchange.sent and not response["allowed"]
    ]
    plaintext = [m for m in denied if m.startswith("plaintextSecrets: ")]
    assert len(plaintext) >= 60
    for name in ("DB_PASSWORD", "DATABASE_URL", "API_TOKEN"):
        assert any(f"env {name}: " in m for m in plaintext), name
    # The value pasted into a reference annotation is refused without being shown.
    assert any(m.endswith("(value not shown)") for m in denied)
