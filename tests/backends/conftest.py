"""Fixtures for the backend tests (the servers themselves come from tests/servers.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import boto3
import pytest

from tests.backends.builders import VaultWorld, VerifierFactory, seed_vault
from tests.servers import BaoServer
from webhook.metrics import Metrics
from webhook.settings import Settings
from webhook.verification import ReferenceVerifier, open_verifier


@pytest.fixture(scope="session")
def vault_world(openbao: BaoServer, tmp_path_factory: pytest.TempPathFactory) -> VaultWorld:
    return seed_vault(openbao, tmp_path_factory.mktemp("vault-identities"))


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture(scope="session")
def aws_session() -> boto3.Session:
    """One boto3 session for the verifiers of all tests: making clients from a fresh
    session costs a few hundred milliseconds of CPU, once per verifier."""
    return boto3.Session()


@pytest.fixture
async def make_verifier(
    metrics: Metrics, aws_session: boto3.Session
) -> AsyncIterator[VerifierFactory]:
    """open_verifier(settings, metrics) for this test's Metrics; closed after the test."""
    opened: list[ReferenceVerifier] = []

    def make(settings: Settings) -> ReferenceVerifier:
        verifier = open_verifier(settings, metrics, aws_session=aws_session)
        assert verifier is not None
        opened.append(verifier)
        return verifier

    yield make
    for verifier in opened:
        await verifier.close()
