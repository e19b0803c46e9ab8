"""Read a YAML file into frozen dataclasses, with errors that name the file, line and key.

The dataclasses are the schema: a field's camelCase name is its key, its type annotation
the allowed type (bool, int, float, str, Literal[...], tuple[str, ...], dict[str, str],
a nested dataclass, or `X | None`). Unknown keys are errors with a did-you-mean.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin

import yaml

from webhook.errors import ConfigError

T = TypeVar("T")

_KeyPath = tuple[str, ...]


_ACRONYMS = {"ttl": "TTL"}


def camel(name: str) -> str:
    """`metrics_port` -> `metricsPort`, `cache_ttl_seconds` -> `cacheTTLSeconds`."""
    head, *rest = name.split("_")
    return head + "".join(_ACRONYMS.get(part, part[:1].upper() + part[1:]) for part in rest)


@dataclasses.dataclass(frozen=True, slots=True)
class Document:
    """A parsed YAML mapping and the line of every key in it."""

    source: str
    data: Any
    lines: Mapping[_KeyPath, int]

    def error(self, path: _KeyPath, problem: str) -> ConfigError:
        """An error pointing at `path`, or at its nearest parent with a known line."""
        for depth in range(len(path), -1, -1):
            line = self.lines.get(path[:depth])
            if line is not None:
                break
        where = ".".join(path) or "(top level)"
        at = f"{self.source}:{line}" if line is not None else self.source
        return ConfigError(f"{at}: {where}: {problem}")


def read_document(text: str, source: str) -> Document:
    """Parse YAML text, keeping line numbers (1-based) of every mapping key."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{at}: not valid YAML: {problem}") from None
    lines: dict[_KeyPath, int] = {}
    if root is None:
        return Document(source, {}, lines)
    _collect_lines(root, (), lines)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:  # composable but not constructible (e.g. bad tags)
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    return Document(source, data, lines)


def read_file(path: str | Path) -> Document:
    """Read and parse a YAML file; a missing or unreadable file is a ConfigError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return read_document(text, str(path))


def _collect_lines(node: yaml.Node, path: _KeyPath, lines: dict[_KeyPath, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = str(key_node.value)
            lines[(*path, key)] = key_node.start_mark.line + 1
            _collect_lines(value_node, (*path, key), lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, str(index))] = item.start_mark.line + 1
            _collect_lines(item, (*path, str(index)), lines)


def build(cls: type[T], doc: Document, data: Any = None, path: _KeyPath = ()) -> T:
    """Build dataclass `cls` from `data` (default: the whole document), checking types."""
    value = doc.data if data is None and not path else data
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise doc.error(path, f"must be a mapping, got {_kind(value)}")
    hints = typing.get_type_hints(cls)
    fields = {camel(f.name): f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in value:
        if not isinstance(key, str) or key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            known = ", ".join(sorted(fields))
            raise doc.error((*path, str(key)), f"unknown key{hint}; known keys: {known}")
    kwargs: dict[str, Any] = {}
    for key, field in fields.items():
        if key in value:
            kwargs[field.name] = convert(hints[field.name], doc, value[key], (*path, key))
    try:
        return cls(**kwargs)
    except ValueError as exc:  # __post_init__ checks that span several keys
        raise doc.error(path, str(exc)) from None


def convert(hint: Any, doc: Document, value: Any, path: _KeyPath) -> Any:
    """Check `value` against the type `hint` and convert it (lists become tuples)."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        problems = []
        for option in options:
            if option is type(None):
                continue
            try:
                return convert(option, doc, value, path)
            except ConfigError as exc:
                problems.append(str(exc))
        raise (
            ConfigError(problems[0])
            if len(problems) == 1
            else doc.error(path, f"has the wrong type ({_kind(value)})")
        )
    if origin is typing.Literal:
        allowed = get_args(hint)
        if isinstance(value, bool) and ("on" if value else "off") in allowed:
            # YAML 1.1 reads an unquoted `mode: off` (or on/no/yes) as a boolean.
            value = "on" if value else "off"
        if value not in allowed:
            choices = " | ".join(str(a) for a in allowed)
            raise doc.error(path, f"must be one of {choices}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise doc.error(path, f"must be a list, got {_kind(value)}")
        (item_hint, _ellipsis) = get_args(hint)
        return tuple(convert(item_hint, doc, item, (*path, str(i))) for i, item in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise doc.error(path, f"must be a mapping, got {_kind(value)}")
        key_hint, item_hint = get_args(hint)
        return {
            convert(key_hint, doc, k, (*path, str(k))): convert(item_hint, doc, v, (*path, str(k)))
            for k, v in value.items()
        }
    if dataclasses.is_dataclass(hint):
        return build(typing.cast(type[Any], hint), doc, value, path)
    if hint is bool:
        if not isinstance(value, bool):
            raise doc.error(path, f"must be true or false, got {_kind(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise doc.error(path, f"must be an integer, got {_kind(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise doc.error(path, f"must be a number, got {_kind(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise doc.error(path, f"must be a string, got {_kind(value)}")
        return value
    raise TypeError(f"config schema uses an unsupported type: {hint!r}")  # a bug, not input


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)
