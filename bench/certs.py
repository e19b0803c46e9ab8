"""Serving certificates for the benchmark: the project's own development CA and ECDSA P-256
serving certificate (`secret-injector certs`), as `make run` uses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from webhook import certs


@dataclass(frozen=True, slots=True)
class Certs:
    ca: Path
    cert: Path
    key: Path


def make(directory: Path, repo: Path) -> Certs:
    """Certificates for 127.0.0.1/localhost under `directory` (`repo` is kept for callers)."""
    del repo
    files, _ = certs.write_dev_certs(directory)
    return Certs(files.ca_cert, files.cert, files.key)
