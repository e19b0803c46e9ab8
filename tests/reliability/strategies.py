"""Hypothesis strategies for hostile and valid admission input.

- `json_values()`: any JSON value;
- `references()`: reference strings, from well-formed ones to garbage (unicode, control
  characters, very long values, secrets pasted where a reference should be);
- `our_annotations()`: annotations under our prefix with random keys and values;
- `opted_in()`: annotations that a pod in `NAMESPACE` may use under the default policy;
- `wrecked()`: a valid AdmissionReview with wrong types or missing fields at any level.
"""

from __future__ import annotations

import copy
import string
from collections.abc import Iterator
from typing import Any

from hypothesis import strategies as st

PREFIX = "secret-injector.io/"
NAMESPACE = "team-a"
KNOWN_KEYS = ("inject", "vault-role", "aws-region", "containers", "mount-path", "status")
SCHEMES = ("vault:", "aws-sm:", "aws-ssm:", "bao:", "gcp:", "", "VAULT:")
# Markers of a value pasted where a reference belongs; a denial must never echo them.
PASTED_SECRET = "AKIAZZZZQQQQ7777XXXX"

Json = Any

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values: st.SearchStrategy[Json] = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)

# Text that stresses parsers: control characters, separators, unicode look-alikes.
nasty_text = st.text(
    alphabet=st.sampled_from(
        [
            *string.printable,
            "\x00",
            "\x1b",
            "\u202e",
            "\u00a0",
            "\u2028",
            "\ufeff",
            "\u00e9",
            "\ufb01",
            "\U0001d533",
        ]
    ),
    max_size=40,
) | st.text(max_size=40)
path_segment = st.text(
    alphabet=string.ascii_lowercase + string.digits + "-_.", min_size=1, max_size=12
)


@st.composite
def well_formed_reference(draw: st.DrawFn, namespace: str = NAMESPACE) -> str:
    """A reference the default policy lets `namespace` use."""
    name = draw(path_segment)
    key = draw(st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True))
    kind = draw(st.sampled_from(["vault", "vault-version", "aws-sm", "aws-sm-key", "aws-ssm"]))
    if kind == "vault":
        return f"vault:secret/data/{namespace}/{name}#{key}"
    if kind == "vault-version":
        return f"vault:secret/data/{namespace}/{name}#{key}?version={draw(st.integers(1, 99))}"
    if kind == "aws-sm":
        return f"aws-sm:{namespace}/{name}"
    if kind == "aws-sm-key":
        return f"aws-sm:{namespace}/{name}#{key}"
    return f"aws-ssm:/{namespace}/{name}"


@st.composite
def references(draw: st.DrawFn) -> str:
    """Reference strings, well-formed or not."""
    shape = draw(st.integers(0, 5))
    if shape == 0:
        return draw(well_formed_reference())
    if shape == 1:
        return draw(st.sampled_from(SCHEMES)) + draw(nasty_text)
    if shape == 2:  # very long: past every limit of the grammar
        return draw(st.sampled_from(SCHEMES)) + "a/" * draw(st.integers(500, 20_000))
    if shape == 3:
        return f"{PASTED_SECRET}{draw(nasty_text)}"
    if shape == 4:  # a well-formed reference with something appended
        return (
            draw(well_formed_reference())
            + draw(st.sampled_from(["#", "?", "?version=", "\n", "\x00", " "]))
            + draw(nasty_text)
        )
    return draw(nasty_text)


@st.composite
def our_annotations(draw: st.DrawFn) -> dict[str, str]:
    """Annotations under our prefix: known and unknown keys, odd names, any values."""
    annotations: dict[str, str] = {}
    if draw(st.booleans()):
        annotations[PREFIX + "inject"] = draw(st.sampled_from(["true", "false", "True", "1", ""]))
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["file", "env", "known", "other"]))
        if kind in ("file", "env"):
            key = f"{kind}.{draw(nasty_text | path_segment)}"
            value = draw(references())
        elif kind == "known":
            key = draw(st.sampled_from(KNOWN_KEYS))
            value = draw(nasty_text | st.sampled_from(["app", "/mnt/x", "us-east-1", "injected"]))
        else:
            key = draw(nasty_text)
            value = draw(nasty_text)
        annotations[PREFIX + key] = value
    return annotations


@st.composite
def opted_in(draw: st.DrawFn, containers: list[str]) -> dict[str, str]:
    """Annotations `NAMESPACE` may use: opt in, 1-4 well-formed references, and maybe the
    optional keys with values that are valid for `containers`."""
    annotations = {PREFIX + "inject": "true"}
    for index in range(draw(st.integers(1, 4))):
        reference = draw(well_formed_reference())
        if draw(st.booleans()):
            annotations[f"{PREFIX}file.f{index}-{draw(path_segment)}"] = reference
        else:
            name = draw(st.from_regex(r"[A-Z_][A-Z0-9_]{0,15}", fullmatch=True))
            annotations[f"{PREFIX}env.{name}"] = reference
    if draw(st.booleans()) and containers:
        chosen = draw(st.lists(st.sampled_from(containers), min_size=1, max_size=2, unique=True))
        annotations[PREFIX + "containers"] = ",".join(chosen)
    if draw(st.booleans()):
        annotations[PREFIX + "mount-path"] = "/" + "/".join(
            draw(st.lists(path_segment, min_size=1, max_size=3))
        )
    if draw(st.booleans()):
        annotations[PREFIX + "vault-role"] = draw(path_segment)
    if draw(st.booleans()):
        annotations[PREFIX + "aws-region"] = draw(st.sampled_from(["us-east-1", "eu-west-3"]))
    return annotations


def _paths(value: Json, here: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Every path into `value` (the root included)."""
    yield here
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*here, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*here, index))


def _wrong_type(value: Json) -> st.SearchStrategy[Json]:
    """JSON values of another type than `value`."""
    candidates: list[Json] = [None, True, 0, -1, 1.5, "", "x", [], [1], {}, {"a": 1}]
    return st.sampled_from([c for c in candidates if type(c) is not type(value)])


@st.composite
def wrecked(draw: st.DrawFn, review: dict[str, Json]) -> dict[str, Json]:
    """`review` with 1-3 of: a field removed, a value of the wrong type, any JSON value."""
    damaged = copy.deepcopy(review)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(damaged) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = damaged
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        action = draw(st.sampled_from(["remove", "wrong-type", "any"]))
        if action == "remove":
            del parent[last]
        elif action == "wrong-type":
            parent[last] = draw(_wrong_type(parent[last]))
        else:
            parent[last] = draw(json_values)
    return damaged
