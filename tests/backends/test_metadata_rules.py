"""Pure rules of the backends: KV v2 metadata, path mapping, SSM ARNs, lookup keys."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from webhook.backends import FOUND, Existence, Lookup, lookup_for
from webhook.backends.aws import parameter_names
from webhook.backends.vault import Mount, kv2_existence, kv_split
from webhook.refs import AwsParameterRef, AwsSecretRef, SecretRef, VaultRef

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def versions(**states: dict[str, Any]) -> dict[str, Any]:
    return {
        "current_version": max(int(v[1:]) for v in states),
        "versions": {
            k[1:]: {"deletion_time": "", "destroyed": False, **state} for k, state in states.items()
        },
    }


@pytest.mark.parametrize(
    ("metadata", "version", "expected"),
    [
        pytest.param(versions(v1={}), None, FOUND, id="current"),
        pytest.param(versions(v1={}, v2={}), 1, FOUND, id="pinned-older"),
        pytest.param(
            versions(v1={}),
            2,
            Existence(False, "version 2 not found (current is 1)"),
            id="pinned-missing",
        ),
        pytest.param(
            versions(v1={"destroyed": True}),
            None,
            Existence(False, "current version 1 is destroyed"),
            id="current-destroyed",
        ),
        pytest.param(
            versions(v1={"deletion_time": "2025-12-31T23:59:59.123456789Z"}),
            1,
            Existence(False, "version 1 is deleted"),
            id="deleted-in-the-past",
        ),
        pytest.param(
            versions(v1={"deletion_time": "2026-06-01T00:00:00Z"}),
            None,
            FOUND,
            id="deletion-scheduled-later",  # delete_version_after: still readable now
        ),
        pytest.param(
            {"current_version": 0, "versions": {}},
            None,
            Existence(False, "secret has no version"),
            id="metadata-without-versions",
        ),
    ],
)
def test_kv2_existence_reads_versions_from_metadata(
    metadata: dict[str, Any], version: int | None, expected: Existence
) -> None:
    assert kv2_existence(metadata, version, NOW) == expected


KV2 = Mount("secret/", "kv", 2)
KV1 = Mount("kv/", "kv", 1)


@pytest.mark.parametrize(
    ("mount", "path", "expected"),
    [
        pytest.param(KV2, "secret/data/prod/db", ("metadata", "prod/db"), id="kv2"),
        pytest.param(
            KV2,
            "secret/prod/db",
            Existence(False, "KV v2 paths need data/ after the mount: secret/data/"),
            id="kv2-without-data",
        ),
        pytest.param(
            KV2,
            "secret/data/",
            Existence(False, "path names a folder, not a secret"),
            id="kv2-root",
        ),
        pytest.param(KV1, "kv/prod/db", ("list", "prod/db"), id="kv1"),
        pytest.param(KV1, "kv/data/db", ("list", "data/db"), id="kv1-data-is-a-name"),
    ],
)
def test_kv_split_maps_the_api_path_to_the_metadata_endpoint(
    mount: Mount, path: str, expected: tuple[str, str] | Existence
) -> None:
    assert kv_split(mount, path) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("/prod/db", ["/prod/db"], id="name"),
        pytest.param("arn:aws:ssm:us-east-1:1:parameter/prod/db", ["/prod/db"], id="arn-path"),
        pytest.param("arn:aws:ssm:us-east-1:1:parameter/db", ["db", "/db"], id="arn-flat"),
    ],
)
def test_parameter_names_turn_an_arn_into_names(name: str, expected: list[str]) -> None:
    assert parameter_names(name) == expected


@pytest.mark.parametrize(
    ("ref", "region", "expected"),
    [
        pytest.param(
            VaultRef("secret/data/a", "password", 2),
            "eu-west-1",
            Lookup("vault", None, VaultRef("secret/data/a", "", 2)),
            id="vault-key-and-region-dropped",
        ),
        pytest.param(
            AwsSecretRef("a", json_key="k", version_stage="AWSPREVIOUS"),
            "eu-west-1",
            Lookup("aws-sm", "eu-west-1", AwsSecretRef("a", version_stage="AWSPREVIOUS")),
            id="aws-sm-json-key-dropped",
        ),
        pytest.param(
            AwsParameterRef("/a"), None, Lookup("aws-ssm", None, AwsParameterRef("/a")), id="ssm"
        ),
    ],
)
def test_lookup_keeps_only_what_metadata_can_check(
    ref: SecretRef, region: str | None, expected: Lookup
) -> None:
    assert lookup_for(ref, region) == expected
