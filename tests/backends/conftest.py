"""Fixtures for the backend tests (the servers themselves come from tests/servers.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

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


@pytest.fixture
async def make_verifier(metrics: Metrics) -> AsyncIterator[VerifierFactory]:
    """open_verifier(settings, metrics) for this test's Metrics; closed after the test."""
    opened: list[ReferenceVerifier] = []

    def make(settings: Settings) -> ReferenceVerifier:
        verifier = open_verifier(settings, metrics)
        assert verifier is not None
        opened.append(verifier)
        return verifier

    yield make
    for verifier in opened:
        await verifier.close()
