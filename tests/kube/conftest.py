"""Fixtures for the Kubernetes API seam: a fake API server per test, and Settings aimed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.fake_kube import FakeKube
from webhook.settings import Kubernetes, Settings


@pytest.fixture
async def fake() -> AsyncIterator[FakeKube]:
    """A started fake API server with the namespaces the tests use; closed afterwards."""
    async with FakeKube(namespaces=["default", "team-a", "secret-injector"]) as server:
        yield server


@pytest.fixture
def settings(fake: FakeKube, tmp_path: Path) -> Settings:
    """Settings whose kubeconfig points at `fake`; a deadline generous for a loaded machine."""
    kubeconfig = fake.kubeconfig(tmp_path / "kubeconfig")
    return replace(
        Settings(), kubernetes=Kubernetes(kubeconfig=str(kubeconfig), timeout_seconds=5.0)
    )
