"""Globs of the policy: reference globs with `{namespace}` / `{serviceAccount}`, name globs.

Reference globs match `<scheme>:<path-or-name>` (no `#key`, no `?version`), with the
semantics of Vault ACL paths, made safe for tenancy:

- a `*` that ends the glob matches any rest, `/` included: `vault:secret/data/team-a/*`
  covers team-a's whole subtree, as `secret/data/team-a/*` does in a Vault policy and
  `team-a/*` in an IAM resource ARN;
- a `*` anywhere else matches within one path segment, never across a `/`: a glob like
  `vault:secret/data/*/shared/*` cannot reach `team-b/private/shared/...`;
- `{namespace}` and `{serviceAccount}` expand to the pod's own, literally, and must be
  followed by `/` or end the glob: `aws-sm:{namespace}*` would let namespace `a` read
  `a-b/...`, so it is refused when the policy is loaded.

A reference path must be canonical before any glob is tried (`canonical_problem`): no
`.` or `..` segment, no empty segment (`//`, a trailing `/`), no `%`, `\\`, whitespace or
control characters. Backends disagree on what `..` means; we never guess.
"""

from __future__ import annotations

import functools
import re

SCHEMES = ("vault", "aws-sm", "aws-ssm")
PLACEHOLDERS = ("namespace", "serviceAccount")

_PARTS = re.compile(r"\{([^{}]*)\}|\*")
# Kubernetes names (namespaces, service accounts) are DNS labels or subdomains.
_NAME_GLOB = re.compile(r"[a-z0-9.*-]+")
_FORBIDDEN = re.compile(r"[%\\\s\x00-\x1f\x7f]")


def check_ref_glob(glob: str) -> None:
    """Raise ValueError saying what is wrong with a reference glob."""
    scheme, sep, path = glob.partition(":")
    if not sep or scheme not in SCHEMES:
        raise ValueError(f"{glob!r} must start with one of {', '.join(s + ':' for s in SCHEMES)}")
    if not path:
        raise ValueError(f"{glob!r} has nothing after {scheme}:")
    for match in _PARTS.finditer(path):
        name = match.group(1)
        if name is None:
            continue
        if name not in PLACEHOLDERS:
            known = " or ".join("{" + p + "}" for p in PLACEHOLDERS)
            raise ValueError(f"{glob!r} has an unknown placeholder {{{name}}}; use {known}")
        if match.end() < len(path) and path[match.end()] != "/":
            raise ValueError(
                f"{glob!r}: {{{name}}} must be followed by / or end the glob, or one tenant's "
                f"glob could match another's names"
            )
    if "{" in _PARTS.sub("", path) or "}" in _PARTS.sub("", path):
        raise ValueError(f"{glob!r} has an unbalanced {{ or }}")
    problem = canonical_problem(_PARTS.sub("x", path))
    if problem is not None:
        raise ValueError(f"{glob!r} has {problem}")


def check_name_glob(glob: str) -> None:
    """Raise ValueError unless `glob` is a Kubernetes name, `*` allowed anywhere."""
    if not _NAME_GLOB.fullmatch(glob):
        raise ValueError(
            f"{glob!r} is not a name glob (lowercase letters, digits, '-', '.' and '*')"
        )


def canonical_problem(path: str) -> str | None:
    """Why a reference path is not canonical, or None when it is."""
    if not path:
        return "an empty path"
    if _FORBIDDEN.search(path):
        return "a '%', '\\', space or control character"
    # One leading `/` is part of some names (SSM: /team-a/db); any other empty segment is not.
    segments = path.split("/")
    if segments[0] == "":
        segments = segments[1:]
    if "" in segments:
        return "an empty segment (// or a trailing /)"
    if ".." in segments:
        return "a '..' segment"
    if "." in segments:
        return "a '.' segment"
    return None


def ref_matches(glob: str, subject: str, namespace: str, service_account: str) -> bool:
    """Whether `subject` (`scheme:path`) matches `glob` for the given pod identity."""
    return _ref_pattern(glob, namespace, service_account).fullmatch(subject) is not None


def expand(glob: str, namespace: str, service_account: str) -> str:
    """The glob with its placeholders filled in, to show users what they may use."""
    return glob.replace("{namespace}", namespace).replace("{serviceAccount}", service_account)


def name_matches(glob: str, name: str) -> bool:
    """Whether a Kubernetes name matches a name glob (`*`: any characters)."""
    return _name_pattern(glob).fullmatch(name) is not None


@functools.lru_cache(maxsize=4096)
def _ref_pattern(glob: str, namespace: str, service_account: str) -> re.Pattern[str]:
    values = {"namespace": namespace, "serviceAccount": service_account}
    out: list[str] = []
    position = 0
    for match in _PARTS.finditer(glob):
        out.append(re.escape(glob[position : match.start()]))
        if match.group(1) is not None:
            out.append(re.escape(values[match.group(1)]))
        elif match.end() == len(glob):
            out.append(".*")
        else:
            out.append("[^/]*")
        position = match.end()
    out.append(re.escape(glob[position:]))
    return re.compile("".join(out))


@functools.lru_cache(maxsize=1024)
def _name_pattern(glob: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in glob.split("*")))
