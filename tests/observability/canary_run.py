"""The canary run: a few hundred reviews of every kind through a running `serve` process
whose backends (real OpenBao and moto) hold canary values, then a backend outage.

The run is recorded (every exchange, the metrics page, everything the process printed)
and the tests look at the record.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonpatch
import orjson

from tests.conftest import PREFIX, make_pod, make_review
from tests.observability.canaries import Canaries
from tests.observability.webhook_process import Exchange, WebhookProcess, post, scrape

CONCURRENCY = 16
MAX_BODY_BYTES = 64 * 1024
Pod = dict[str, Any]


@dataclass
class CanaryRun:
    """What the canary run left behind."""

    canaries: Canaries
    exchanges: list[Exchange]
    metrics: str
    stdout: str
    stderr: str
    exit_code: int

    def reviews(self) -> Iterator[tuple[Exchange, dict[str, Any]]]:
        """Exchanges answered with an AdmissionReview, and its response."""
        for exchange in self.exchanges:
            if exchange.status == 200 and exchange.endpoint in ("mutate", "validate"):
                yield exchange, exchange.json()["response"]


def config(vault_address: str, token_file: Path) -> dict[str, Any]:
    """Verification in warn mode, a dead backend denies, the most verbose log level."""
    return {
        "logging": {"level": "debug"},
        "maxBodyBytes": MAX_BODY_BYTES,
        "providers": {
            "vault": {
                "address": vault_address,
                "auth": {"method": "token", "tokenFile": str(token_file)},
            },
            "aws": {"region": "us-east-1"},
        },
        "verify": {
            "mode": "warn",
            "timeoutSeconds": 2,
            "onBackendError": "deny",
            "breakerFailures": 5,
            "breakerResetSeconds": 60,
        },
    }


def opted_in(
    namespace: str,
    refs: dict[str, str],
    *,
    index: int,
    env: list[dict[str, Any]] | None = None,
    init_env: list[dict[str, Any]] | None = None,
) -> Pod:
    """An opted-in pod; odd indexes come from a ReplicaSet (generateName, owner)."""
    annotations = {PREFIX + "inject": "true", **{PREFIX + k: v for k, v in refs.items()}}
    containers: list[dict[str, Any]] = [{"name": "app", "image": "app:1", "env": env or []}]
    init = [{"name": "init", "image": "app:1", "env": init_env}] if init_env else []
    pod = make_pod(annotations, containers=containers, init_containers=init, namespace=namespace)
    pod["metadata"]["name"] = f"web-{index}"
    if index % 2:
        del pod["metadata"]["name"]
        pod["metadata"]["generateName"] = f"web-{index % 7}-"
        pod["metadata"]["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": f"web-{index % 7}",
                "uid": str(uuid.uuid4()),
                "controller": True,
            }
        ]
    return pod


def patched(pod: Pod, response: dict[str, Any]) -> Pod:
    """`pod` with the response's patch applied (unchanged when there is none)."""
    if "patch" not in response:
        return copy.deepcopy(pod)
    ops = orjson.loads(base64.b64decode(response["patch"]))
    result: Pod = jsonpatch.apply_patch(pod, ops)
    return result


class Driver:
    """Sends reviews to the running webhook, at most CONCURRENCY at a time, recording all."""

    def __init__(self, server: WebhookProcess) -> None:
        self.server = server
        self.exchanges: list[Exchange] = []
        self._gate = asyncio.Semaphore(CONCURRENCY)
        self._session = server.session()

    async def close(self) -> None:
        await self._session.close()

    async def send(
        self, endpoint: str, body: bytes | dict[str, Any], content_type: str = "application/json"
    ) -> Exchange:
        async with self._gate:
            exchange = await post(
                self._session, self.server.webhook_url, endpoint, body, content_type
            )
        self.exchanges.append(exchange)
        return exchange

    async def review(self, endpoint: str, pod: Pod, **kwargs: Any) -> dict[str, Any]:
        """Send a review of `pod`; the AdmissionResponse."""
        exchange = await self.send(endpoint, make_review(pod, **kwargs))
        assert exchange.status == 200, exchange.body
        response: dict[str, Any] = exchange.json()["response"]
        return response

    async def lifecycle(self, pod: Pod) -> None:
        """What the API server does with a pod: mutate, reinvoke on the result, validate."""
        first = await self.review("mutate", pod)
        if not first["allowed"]:
            return
        result = patched(pod, first)
        await self.review("mutate", result)
        await self.review("validate", result)

    async def metrics(self) -> str:
        return await scrape(self._session, self.server.metrics_url)


def _plaintext_env(canary: str, index: int) -> list[dict[str, Any]]:
    variants = [
        [{"name": "DB_PASSWORD", "value": canary}],
        [{"name": "DATABASE_URL", "value": f"postgres://app:{canary}@db:5432/app"}],
        [{"name": "API_TOKEN", "value": canary}, {"name": "MODE", "value": "prod"}],
    ]
    return variants[index % len(variants)]


def _malformed(canaries: Canaries) -> list[tuple[bytes, str]]:
    """Bodies that are not usable AdmissionReviews, several carrying a literal canary."""
    secret = canaries.plaintext
    leaky = make_pod(
        containers=[
            {"name": "app", "image": "x", "env": [{"name": "DB_PASSWORD", "value": secret}]}
        ]
    )
    whole = orjson.dumps(make_review(leaky))
    cut = whole[: whole.index(secret.encode()) + 20]  # ends inside the canary
    env_not_list = make_review(leaky)
    env_not_list["request"]["object"]["spec"]["containers"][0]["env"] = {"DB_PASSWORD": secret}
    # Opted in: /mutate checks the containers of the pods it plans (it leaves others alone).
    env_not_list["request"]["object"]["metadata"]["annotations"] = {PREFIX + "inject": "true"}
    bad_annotations = make_review(make_pod({PREFIX + "inject": "true"}))
    bad_annotations["request"]["object"]["metadata"]["annotations"][PREFIX + "env.X"] = [secret]
    bad_version = make_review(leaky)
    bad_version["apiVersion"] = "admission.k8s.io/v1beta1"
    no_uid = make_review(leaky)
    del no_uid["request"]["uid"]
    json = "application/json"
    return [
        (b"not json " + secret.encode(), json),
        (cut, json),
        (orjson.dumps(env_not_list), json),
        (orjson.dumps(bad_annotations), json),
        (orjson.dumps(bad_version), json),
        (orjson.dumps(no_uid), json),
        (orjson.dumps([make_review(leaky)]), json),
        (whole, "text/plain"),
        (whole + b" " * MAX_BODY_BYTES, json),  # too large
    ]


async def drive(
    server: WebhookProcess, canaries: Canaries, stop_vault: Callable[[], None]
) -> tuple[list[Exchange], str]:
    """Every kind of review, then the Vault outage; the exchanges and the final metrics."""
    driver = Driver(server)
    ns = canaries.namespace
    refs = canaries.refs
    missing = {
        "file.gone": f"vault:secret/data/{ns}/missing#x",
        "env.GONE": f"aws-sm:{ns}/missing",
        "file.gone-param": f"aws-ssm:/{ns}/missing",
    }
    combos: list[dict[str, str]] = [
        {"file.db": refs["vault_db"]},
        {"env.API_KEY": refs["sm_json"]},
        {"file.url": refs["ssm"], "env.PLAIN": refs["sm_plain"]},
        {
            "file.db": refs["vault_db"],
            "file.api": refs["vault_api"],
            "env.API_KEY": refs["sm_json"],
            "file.url": refs["ssm"],
        },
    ]
    annotation_errors: list[dict[str, str]] = [
        {"env.DB_PASSWORD": canaries.plaintext},  # a value pasted where a reference goes
        {"file.db": refs["vault_db"], "flie.api": refs["vault_api"]},
        {"file.db": refs["vault_db"].split("#")[0]},
        {"file.db": "vaul:" + refs["vault_db"].split(":", 1)[1]},
        {"env.1BAD": refs["sm_json"]},
    ]
    work: list[Awaitable[Any]] = []
    for i in range(60):  # injected, reinvoked (allowed), validated
        work.append(driver.lifecycle(opted_in(ns, combos[i % len(combos)], index=i)))
    for i in range(20):  # missing references: warnings (warn mode), then outcome warned
        chosen = dict(list(missing.items())[i % 3 : i % 3 + 1])
        work.append(driver.lifecycle(opted_in(ns, {**chosen, **combos[0]}, index=i)))
    intruder = f"intruder-{ns}"
    for i in range(30):  # another tenant's paths: denied by policy before any backend call
        work.append(driver.review("mutate", opted_in(intruder, combos[i % 4], index=i)))
    for i in range(30):  # annotation errors
        refs_i = annotation_errors[i % len(annotation_errors)]
        work.append(driver.review("mutate", opted_in(ns, refs_i, index=i)))
    for i in range(30):  # plaintext secrets in env, app and init containers
        env = _plaintext_env(canaries.plaintext, i)
        pod = opted_in(ns, combos[0], index=i, **({"init_env": env} if i % 2 else {"env": env}))
        work.append(driver.review("mutate", pod))
        plain = make_pod(containers=[{"name": "app", "image": "x", "env": env}], namespace=ns)
        work.append(driver.review("validate", plain))
    for i in range(4):  # malformed bodies, each sent a few times
        for body, content_type in _malformed(canaries):
            work.append(driver.send("mutate" if i % 2 else "validate", body, content_type))
    secret_object = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "namespace": ns},
        "stringData": {"password": canaries.plaintext},
    }
    for i in range(10):  # not for us: other operations, kinds and sub-resources
        pod = opted_in(ns, combos[0], index=i, env=_plaintext_env(canaries.plaintext, i))
        work.append(driver.review("mutate", pod, operation="UPDATE", old_object=pod))
        work.append(driver.review("mutate", pod, operation="DELETE"))
        work.append(driver.review("validate", secret_object))
        work.append(driver.review("mutate", pod, operation="CONNECT", sub_resource="exec"))
        work.append(driver.review("mutate", pod, dry_run=True))
    await asyncio.gather(*work)

    # Vault goes away: fresh references cannot be checked and are denied (onBackendError:
    # deny); after breakerFailures the circuit opens and answers at once.
    await asyncio.to_thread(stop_vault)
    down: list[Awaitable[Any]] = []
    for i in range(30):
        fresh = {"file.db": f"vault:secret/data/{ns}/down-{i}#password"}
        down.append(driver.review("mutate", opted_in(ns, fresh, index=i)))
    for i in range(10):  # known references are answered from the cache
        down.append(driver.review("mutate", opted_in(ns, combos[0], index=i)))
    await asyncio.gather(*down)
    for path in ("/healthz", "/readyz", "/nowhere"):
        async with driver._session.get(server.webhook_url + path) as response:
            driver.exchanges.append(Exchange(path, b"", response.status, await response.read()))
    metrics = await driver.metrics()
    await driver.close()
    return driver.exchanges, metrics
