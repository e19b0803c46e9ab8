"""The Dockerfile's invariants, checked by parsing it (no Docker engine here)."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPILERS = re.compile(r"\b(gcc|g\+\+|cc|clang|build-essential|make|python3?-dev|libc6?-dev)\b")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, instruction: str) -> list[str]:
        return [arg for name, arg in self.instructions if name == instruction]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            assert match, f"unparsable FROM: {line}"
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: global_args[m.group(1)], match.group(1))
            stages.append(Stage(base, match.group(2)))
        elif not stages:
            assert instruction == "ARG", f"{instruction} before the first FROM"
            name, _, default = rest.partition("=")
            global_args[name] = default
        else:
            stages[-1].instructions.append((instruction, rest))
    return global_args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse((ROOT / "Dockerfile").read_text())[1]


def test_dockerfile_parser_joins_continuations() -> None:
    _, parsed = parse('ARG B=x:1\nFROM ${B} AS b\nRUN a \\\n  && c\nFROM b\nUSER 1:1\nCMD ["x"]\n')
    assert [(s.base, s.name) for s in parsed] == [("x:1", "b"), ("b", None)]
    assert parsed[0].args("RUN") == ["a    && c"]


def test_dockerfile_is_multi_stage_on_slim_python(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    builder, final = stages[0], stages[-1]
    assert builder.name == "builder"
    assert re.fullmatch(r"python:3\.1[1-9]-slim(@sha256:[0-9a-f]{64})?", final.base), final.base
    assert final.base == builder.base  # the virtualenv's interpreter path must exist


def test_dockerfile_final_stage_has_no_compilers(stages: list[Stage]) -> None:
    final = stages[-1]
    for instruction, arg in final.instructions:
        assert not COMPILERS.search(arg), f"{instruction} {arg}"
        assert not (instruction == "RUN" and re.search(r"\b(apt-get|apt|pip)\s+install", arg))
    assert COMPILERS.search(" ".join(stages[0].args("RUN")))  # they stay in the builder
    for copy in final.args("COPY"):
        if copy.startswith("--from="):
            assert copy.startswith("--from=builder /opt/secret-injector ")


def test_dockerfile_runs_as_numeric_non_root_user(stages: list[Stage]) -> None:
    users = stages[-1].args("USER")
    assert users, "the final stage sets no USER"
    match = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1])
    assert match, f"USER {users[-1]} is not numeric"
    assert int(match.group(1)) != 0
    assert match.group(2) is None or int(match.group(2)) != 0
    # The chart's podSecurityContext runs the same uid.
    assert int(match.group(1)) == 65532


def test_dockerfile_entrypoint_and_cmd(stages: list[Stage]) -> None:
    final = stages[-1]
    assert [json.loads(e) for e in final.args("ENTRYPOINT")] == [["secret-injector"]]
    assert [json.loads(c) for c in final.args("CMD")] == [
        ["serve", "--config", "/etc/secret-injector/config.yaml"]
    ]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "secret-injector" in scripts
    assert {"8443", "9090"} <= set(" ".join(final.args("EXPOSE")).split())


def test_dockerfile_copies_only_what_exists_and_is_not_ignored(stages: list[Stage]) -> None:
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = [
        source
        for stage in stages
        for copy in stage.args("COPY")
        if not copy.startswith("--from=")
        for source in copy.split()[:-1]
    ]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source
    # Dev certificates and keys must never reach the build context.
    assert "certs" in ignored and ".git" in ignored
