"""Valid Pods for hypothesis, generated from the strict Kubernetes 1.30 Pod schema that
kubernetes-validate ships.

The schema (`pod-v1.json` and the `_definitions.json` it points into) is resolved into one
self-contained schema, then compiled into a hypothesis strategy by `strategy()`, a small
compiler for the subset of JSON Schema the Kubernetes schemas use (type, properties,
required, additionalProperties, items, enum, oneOf). Why not hypothesis-jsonschema:
0.23.1 (its latest release) fails on hypothesis >= 6.170.10 (`'many' object has no
attribute 'more'`), and on hypothesis versions where it works it needs about 1.5 s per
example for the full Pod schema on this 2-core machine (50 examples in 73 s), too slow for
`make test`. Compiling ourselves also lets us bound sizes where it matters:

- at most `max_optional` optional fields per object, fewer as objects nest deeper, so one
  example stays a few KiB while every field of the schema can still be drawn;
- arrays of at most 2 items, maps of at most 2 entries, strings of at most 24 characters;
- `null` is left out (the API server omits unset fields; nulls are the business of the
  malformed-input tests), `status` is left out (absent at CREATE);
- `spec.containers` has at least one item, and containers and volumes have unique DNS-label
  names, as the API server's validation demands (the webhook keys on these names).

Every generated pod is checked with kubernetes_validate strict in the tests themselves.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
from hypothesis import strategies as st

KUBERNETES_VERSION = "1.30.0"
SCHEMA_DIR = (
    Path(kubernetes_validate.__file__).parent
    / "kubernetes-json-schema"
    / f"v{KUBERNETES_VERSION}-local-strict"
)
MAX_ITEMS = 2
MAX_ENTRIES = 2
MAX_TEXT = 24
INT_BOUNDS = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}

Schema = dict[str, Any]
Json = Any


@functools.cache
def pod_schema() -> Schema:
    """The strict 1.30 Pod schema with every `$ref` inlined (it has no recursion)."""
    definitions: dict[str, Schema] = json.loads(
        (SCHEMA_DIR / "_definitions.json").read_text(encoding="utf-8")
    )["$defs"]
    pod: Schema = json.loads((SCHEMA_DIR / "pod-v1.json").read_text(encoding="utf-8"))

    def resolve(node: Json, seen: tuple[str, ...]) -> Json:
        if isinstance(node, list):
            return [resolve(item, seen) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            name = str(node["$ref"]).rsplit("/", 1)[-1]
            if name in seen:
                raise ValueError(f"recursive schema at {name}: cannot inline")
            return resolve(definitions[name], (*seen, name))
        resolved: Schema = {}
        for key, value in node.items():
            if key == "description":
                continue
            if key == "properties":
                resolved[key] = {name: resolve(sub, seen) for name, sub in value.items()}
            else:
                resolved[key] = resolve(value, seen)
        return resolved

    schema: Schema = resolve(pod, ())
    return schema


def _types(schema: Schema) -> list[str]:
    declared = schema.get("type")
    names = declared if isinstance(declared, list) else [declared] if declared else []
    return [t for t in names if t != "null"]


def strategy(
    schema: Schema, *, depth: int = 0, max_optional: int = 6, required: tuple[str, ...] = ()
) -> st.SearchStrategy[Json]:
    """Values valid for `schema` (see the module docstring for the bounds)."""
    if "enum" in schema:
        return st.sampled_from([v for v in schema["enum"] if v is not None])
    if "oneOf" in schema:
        return st.one_of([strategy(sub, depth=depth) for sub in schema["oneOf"]])
    types = _types(schema)
    if not types:
        return st.none() | st.booleans() | st.integers() | st.text(max_size=MAX_TEXT)
    return st.one_of([_typed(name, schema, depth, max_optional, required) for name in types])


def _typed(
    name: str, schema: Schema, depth: int, max_optional: int, extra_required: tuple[str, ...]
) -> st.SearchStrategy[Json]:
    if name == "string":
        return st.text(max_size=MAX_TEXT)
    if name == "integer":
        low, high = INT_BOUNDS.get(str(schema.get("format")), INT_BOUNDS["int64"])
        return st.integers(low, high)
    if name == "number":
        return st.floats(allow_nan=False, allow_infinity=False, width=64)
    if name == "boolean":
        return st.booleans()
    if name == "array":
        items = schema.get("items", {})
        minimum = int(schema.get("minItems", 0))
        return st.lists(
            strategy(items, depth=depth + 1), min_size=minimum, max_size=max(minimum, MAX_ITEMS)
        )
    if name == "object":
        return _object(schema, depth, max_optional, extra_required)
    raise ValueError(f"unsupported schema type {name!r}")


def _object(
    schema: Schema, depth: int, max_optional: int, extra_required: tuple[str, ...]
) -> st.SearchStrategy[Json]:
    properties: dict[str, Schema] = schema.get("properties", {})
    if not properties:
        values = schema.get("additionalProperties")
        if isinstance(values, dict):
            return st.dictionaries(
                st.text(min_size=1, max_size=MAX_TEXT),
                strategy(values, depth=depth + 1),
                max_size=MAX_ENTRIES,
            )
        return st.just({})
    required = [*schema.get("required", []), *extra_required]
    optional = sorted(set(properties) - set(required))
    budget = max(0, max_optional - depth)
    fields: dict[str, st.SearchStrategy[Json]] = {}  # built on first use: the tree is large

    def field(key: str) -> st.SearchStrategy[Json]:
        if key not in fields:
            sub = properties[key]
            if key == "containers":  # the API server requires at least one
                sub = {**sub, "minItems": 1}
            fields[key] = strategy(sub, depth=depth + 1, max_optional=max_optional)
        return fields[key]

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Json]:
        chosen: list[str] = []
        if optional and budget:
            chosen = draw(st.lists(st.sampled_from(optional), max_size=budget, unique=True))
        return {key: draw(field(key)) for key in [*required, *sorted(chosen)]}

    return build()


DNS_LABEL = st.from_regex(r"[a-z]([-a-z0-9]{0,10}[a-z0-9])?", fullmatch=True)


@st.composite
def _named(draw: st.DrawFn, schema_pods: st.SearchStrategy[dict[str, Json]]) -> dict[str, Json]:
    """A schema-valid pod whose containers and volumes have unique DNS-label names, as the
    API server's validation demands of every pod it admits (the schema allows any string;
    the webhook keys mounts and the `containers` annotation on these names)."""
    pod = draw(schema_pods)
    spec = pod["spec"]
    kinds = ("containers", "initContainers", "ephemeralContainers", "volumes")
    count = sum(len(spec.get(kind, [])) for kind in kinds)
    names = iter(draw(st.lists(DNS_LABEL, min_size=count, max_size=count, unique=True)))
    for kind in kinds:
        for item in spec.get(kind, []):
            item["name"] = next(names)
    return pod


@functools.cache
def schema_pods() -> st.SearchStrategy[dict[str, Json]]:
    """Pods valid for the strict 1.30 schema, names and all as random as it allows."""
    schema = dict(pod_schema())
    properties = {k: v for k, v in schema["properties"].items() if k != "status"}
    schema = {**schema, "properties": properties, "required": ["apiVersion", "kind"]}
    return strategy(schema, required=("metadata", "spec"))


def pods() -> st.SearchStrategy[dict[str, Json]]:
    """Valid Pods as the API server sends them at CREATE (schema-valid, names valid)."""
    return _named(schema_pods())


def validation_errors(pod: dict[str, Json]) -> str | None:
    """Why `pod` is not a valid Pod in kubernetes-validate strict mode, or None."""
    try:
        kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return f"{'.'.join(map(str, error.path))}: {error.message}"
    return None
