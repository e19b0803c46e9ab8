"""The webhook has no call that could read a secret value: checked in its source.

Complements the behavioural proofs (OpenBao's audit log, boto3's operation log, a Vault
identity that gets 403 on values) with a guard against anyone adding such a call later.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import webhook

PACKAGE = Path(webhook.__file__).parent

# Calls (or API names) that return secret values, in any casing the SDKs accept.
FORBIDDEN = [
    r"get_secret_value",  # boto3 Secrets Manager GetSecretValue
    r"GetSecretValue",
    r"batch_get_secret_value",
    r"get_parameters?\b",  # SSM GetParameter / GetParameters
    r"get_parameters_by_path",
    r"get_parameter_history",  # returns values too
    r"GetParameter",
    r"read_secret_version",  # hvac KV v2 data read
    r"kv\.v1\.read_secret",  # hvac KV v1 data read
    r"\.read_secret\(",
]
# In the backends: generic hvac reads (`client.read(path)`) could hit any path, values
# included; a KV v2 data endpoint must not be spelled out (examples elsewhere may).
FORBIDDEN_IN_BACKENDS = [r"client\.read\(", r"\.adapter\.get\([^)]*data", r"/data/"]


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def code_lines(path: Path) -> list[tuple[int, str]]:
    """Lines of code with comments and docstring-only lines left out."""
    lines = []
    in_docstring = False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith(('"""', "'''")):
            quotes = stripped[:3]
            if not (len(stripped) > 3 and stripped.endswith(quotes)):
                in_docstring = not in_docstring
            continue
        if in_docstring or stripped.startswith("#"):
            continue
        lines.append((number, line.split("  #")[0]))
    return lines


def test_no_value_reads_scan_covers_the_backends() -> None:
    names = {p.relative_to(PACKAGE).as_posix() for p in sources()}
    assert {"backends/vault.py", "backends/aws.py", "verification.py"} <= names


@pytest.mark.parametrize("pattern", FORBIDDEN)
def test_no_value_reads_in_the_webhook_source(pattern: str) -> None:
    hits = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in sources()
        for number, line in code_lines(path)
        if re.search(pattern, line)
    ]
    assert hits == []


@pytest.mark.parametrize("pattern", FORBIDDEN_IN_BACKENDS)
def test_no_generic_reads_in_the_backends(pattern: str) -> None:
    hits = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted((PACKAGE / "backends").glob("*.py"))
        for number, line in code_lines(path)
        if re.search(pattern, line)
    ]
    assert hits == []


def test_no_value_reads_scan_would_catch_a_value_read(tmp_path: Path) -> None:
    """The scanner itself finds a forbidden call in code (and ignores one in a comment)."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""Docstring mentioning get_secret_value is fine."""\n'
        "# so is a comment: get_secret_value\n"
        "value = client.get_secret_value(SecretId=name)\n"
    )
    matches = [n for n, line in code_lines(sample) if re.search(FORBIDDEN[0], line)]
    assert matches == [3]
