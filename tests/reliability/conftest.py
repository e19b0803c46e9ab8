"""Fixtures of the reliability tests: dev certificates, one threaded webhook per module for
the fuzz tests, and the hypothesis settings they share.

Hypothesis runs derandomized (the same examples on every run, so CI is reproducible) with
no deadline (this machine's two cores are shared) and a bounded number of examples per
test. For a longer hunt: `FUZZ_EXAMPLES=N` sets that bound for every fuzz test, and
`FUZZ_RANDOM=1` draws new examples on each run instead of the fixed ones, e.g.
`FUZZ_RANDOM=1 FUZZ_EXAMPLES=5000 pytest tests/reliability -k fuzz`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.reliability.running import ThreadedWebhook, threaded_webhook
from webhook import certs
from webhook.settings import Kubernetes, Listen, Settings, Tls, Verify


def fuzz_settings(examples: int) -> settings:
    """Hypothesis settings for a fuzz test of `examples` examples (FUZZ_EXAMPLES overrides)."""
    return settings(
        max_examples=int(os.environ.get("FUZZ_EXAMPLES") or examples),
        deadline=None,
        derandomize=os.environ.get("FUZZ_RANDOM", "") in ("", "0"),
        database=None,
        print_blob=True,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


def serving_settings(cert_dir: Path, **changes: object) -> Settings:
    """Settings for a webhook on free ports of 127.0.0.1 with the dev certificates in
    `cert_dir`: no verification and no Kubernetes API (the fuzz tests are about input)."""
    files = certs.CertFiles.under(cert_dir)
    values: dict[str, object] = {
        "listen": Listen(
            address="127.0.0.1",
            port=0,
            metrics_address="127.0.0.1",
            metrics_port=0,
            body_timeout_seconds=1.0,
        ),
        "tls": Tls(cert_file=str(files.cert), key_file=str(files.key), reload_interval_seconds=0.1),
        "verify": Verify(mode="off"),
        "kubernetes": Kubernetes(manage_secret_provider_classes=False),
    }
    values.update(changes)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def module_certs(tmp_path_factory: pytest.TempPathFactory) -> certs.CertFiles:
    files, _ = certs.write_dev_certs(tmp_path_factory.mktemp("certs"))
    return files


@pytest.fixture(scope="module")
def webhook(module_certs: certs.CertFiles) -> Iterator[ThreadedWebhook]:
    """One webhook for the whole module, served from a thread (real TLS, port 0)."""
    with threaded_webhook(serving_settings(module_certs.cert.parent), module_certs.ca_cert) as hook:
        yield hook
