"""Annotation keys and the reference grammar: annotations in, a PodInjection out. No I/O.

Keys live under the configured prefix (default `secret-injector.io/`):

    inject          "true" | "false"              opt in
    file.<name>     reference                     a file <name> in the provider's mount
    env.<NAME>      reference                     environment variable NAME
    vault-role      Vault role name               default: providers.vault.defaultRole
    aws-region      AWS region                    default: providers.aws.region
    containers      comma list of container names default: every app container
    mount-path      absolute path                 default: defaultMountPath (/mnt/secrets)
    status          "injected"                    set by the webhook

References:

    vault:<api-path>#<key>[?version=<n>]
    aws-sm:<name-or-arn>[#<json-key>][?version-stage=<stage> | ?version-id=<id>]
    aws-ssm:<parameter-name>

Every problem becomes one line `annotation <key>: <what> (<how to fix>)`, and all of them
are raised together in one AnnotationError. A reference that does not start with a known
scheme is never echoed back: it might be a secret pasted into the wrong place.
"""

from __future__ import annotations

import difflib
import posixpath
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field

from webhook.errors import AnnotationError, PolicyError
from webhook.refs import (
    AwsParameterRef,
    AwsSecretRef,
    Delivery,
    Injection,
    PodInjection,
    SecretRef,
    UnknownKey,
    VaultRef,
)
from webhook.settings import Settings

# Key names under the prefix.
INJECT = "inject"
FILE = "file."
ENV = "env."
VAULT_ROLE = "vault-role"
AWS_REGION = "aws-region"
CONTAINERS = "containers"
MOUNT_PATH = "mount-path"
STATUS = "status"
INJECTED = "injected"  # the value of `status` once the webhook has mutated the pod
KNOWN_KEYS = (INJECT, VAULT_ROLE, AWS_REGION, CONTAINERS, MOUNT_PATH, STATUS)

# Files whose name starts with this are ours inside a secrets mount (the objects behind env
# vars, the whole JSON secret behind `#key` references); users cannot claim such a name.
RESERVED_FILE_PREFIX = ".secret-injector"

SCHEMES = ("vault", "aws-sm", "aws-ssm")
# Spellings people try for a scheme, and what they meant.
_SCHEME_ALIASES = {
    "bao": "vault",
    "openbao": "vault",
    "hashicorp-vault": "vault",
    "sm": "aws-sm",
    "secretsmanager": "aws-sm",
    "secrets-manager": "aws-sm",
    "aws-secretsmanager": "aws-sm",
    "aws-secrets-manager": "aws-sm",
    "ssm": "aws-ssm",
    "parameter-store": "aws-ssm",
    "aws-parameter-store": "aws-ssm",
    "aws-parameterstore": "aws-ssm",
}

MAX_NAME_PART = 63  # Kubernetes limit for the name part of an annotation key
MAX_REFERENCE = 2048  # an SSM parameter ARN, the longest thing a reference names, is 2048
MAX_FILE_NAME = 253
MAX_ROLE = 256
MAX_CONTAINERS = 4096
MAX_MOUNT_PATH = 1024
_SHOW_LIMIT = 60  # characters of a user value or key shown in a message

_FILE_NAME = re.compile(r"[A-Za-z0-9._-]+")
# Kubernetes 1.30 env var names (IsEnvVarName); they are also the key in the synced Secret.
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
_ENV_CHARS = re.compile(r"[-._a-zA-Z0-9]+")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_ROLE = re.compile(r"[A-Za-z0-9_.@-]+")
_REGION = re.compile(r"[a-z]{2,4}(-[a-z]+)+-[0-9]{1,2}")
_VISIBLE_ASCII = re.compile(r"[!-~]*")
_SCHEME_LIKE = re.compile(r"[A-Za-z][A-Za-z0-9+._-]{0,29}")
_VAULT_SEGMENT_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@+=,~"
)
# Secrets Manager names: 1-512 of these (AWS API reference, CreateSecret Name).
_SM_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/_+=.@-")
_SM_ARN = re.compile(
    r"arn:(?P<partition>aws[a-z-]*):secretsmanager:(?P<region>[a-z0-9-]+):"
    r"(?P<account>[0-9]{12}):secret:(?P<name>[A-Za-z0-9/_+=.@-]{1,512})"
)
# SSM parameter names: letters, digits and _ . - with / for hierarchy (AWS SSM PutParameter).
_SSM_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-/")
_SSM_MAX_NAME = 1011
_SSM_MAX_DEPTH = 15
_STAGE = re.compile(r"[A-Za-z0-9_+=.@-]{1,256}")
_VERSION_ID = re.compile(r"[A-Za-z0-9-]{32,64}")
_MAX_VERSION = 2**31 - 1

_EXAMPLES = {
    "vault": "vault:secret/data/app/db#password",
    "aws-sm": "aws-sm:prod/app/db#password",
    "aws-ssm": "aws-ssm:/prod/app/api-key",
}


def parse(annotations: Mapping[str, str], settings: Settings) -> PodInjection | None:
    """None when the pod is not opted in; raises AnnotationError listing every problem."""
    prefix = settings.prefix
    ours = {
        key[len(prefix) :]: value for key, value in annotations.items() if key.startswith(prefix)
    }
    inject = ours.get(INJECT)
    if inject is None or inject == "false":
        return None
    parser = _Parser(prefix, settings)
    if inject != "true":
        parser.problem(INJECT, f'must be "true" or "false", got {show(inject)}')
    for name in sorted(ours):
        if name != INJECT:
            parser.read(name, ours[name])
    return parser.result()


def ignored_keys(annotations: Mapping[str, str], settings: Settings) -> list[str]:
    """Keys under the prefix on a pod that never said `inject` (a forgotten opt-in), sorted."""
    prefix = settings.prefix
    if prefix + INJECT in annotations:
        return []
    status = prefix + STATUS
    ignored = [key for key in annotations if key.startswith(prefix) and key != status]
    return sorted(ignored) if ignored else ignored


def check_injected(annotations: Mapping[str, str], settings: Settings) -> None:
    """Raise PolicyError when an opted-in pod lacks the `status: injected` marker."""
    prefix = settings.prefix
    if annotations.get(prefix + INJECT) != "true":
        return
    if annotations.get(prefix + STATUS) == INJECTED:
        return
    raise PolicyError(
        f"injection: annotation {prefix}{STATUS}: pod is opted in but was not injected "
        "(check that the secret-injector mutating webhook is running and reachable, and that "
        "its namespaceSelector and matchConditions cover this pod)"
    )


def parse_reference(value: str) -> SecretRef:
    """One reference on its own; raises AnnotationError with one line per problem."""
    ref, problems = _reference(value)
    if ref is None:
        raise AnnotationError([f"reference: {p}" for p in problems])
    return ref


def suggest_key(name: str) -> str | None:
    """The known key a misspelt name under the prefix most likely meant (`flie.db` -> `file.db`)."""
    if len(name) > 2 * MAX_NAME_PART:
        return None
    lowered = name.lower()
    if lowered in KNOWN_KEYS:
        return lowered
    if lowered in ("file", "env"):
        return f"{lowered}.<{'filename' if lowered == 'file' else 'NAME'}>"
    head, dot, tail = name.partition(".")
    if dot and tail:
        family = difflib.get_close_matches(head.lower(), ("file", "env"), n=1, cutoff=0.5)
        if family and head.lower() not in KNOWN_KEYS:
            return f"{family[0]}.{tail}"
    joined = re.fullmatch(r"(file|env)[-_:](.+)", name, flags=re.IGNORECASE)
    if joined:
        return f"{joined.group(1).lower()}.{joined.group(2)}"
    close = difflib.get_close_matches(lowered, KNOWN_KEYS, n=1, cutoff=0.6)
    return close[0] if close else None


def show(text: str) -> str:
    """A user string for a message: quoted, invisible characters escaped, long ones cut."""
    cut = text if len(text) <= _SHOW_LIMIT else text[: _SHOW_LIMIT - 3]
    escaped = "".join(c if c.isprintable() and c not in '"\\' else _escape(c) for c in cut)
    return f'"{escaped}"' if cut is text else f'"{escaped}..." ({len(text)} characters)'


def show_key(key: str) -> str:
    """An annotation key for a message: unquoted unless it holds odd characters or is long."""
    if len(key) <= 2 * _SHOW_LIMIT and all(c.isprintable() and not c.isspace() for c in key):
        return key
    return show(key)


def _escape(char: str) -> str:
    if char in ('"', "\\"):
        return "\\" + char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


@dataclass(slots=True)
class _Parser:
    """Reads one pod's keys, collecting values and every problem on the way."""

    prefix: str
    settings: Settings
    problems: list[str] = field(default_factory=list)
    injections: list[Injection] = field(default_factory=list)
    unknown: list[UnknownKey] = field(default_factory=list)
    vault_role: str | None = None
    aws_region: str | None = None
    containers: tuple[str, ...] | None = None
    mount_path: str | None = None

    def problem(self, name: str, what: str) -> None:
        self.problems.append(f"annotation {show_key(self.prefix + name)}: {what}")

    def read(self, name: str, value: str) -> None:
        if len(name) > MAX_NAME_PART:
            self.problem(
                name,
                f"the key's name part is {len(name)} characters, Kubernetes allows "
                f"{MAX_NAME_PART} (use a shorter file or variable name)",
            )
            return
        if name.startswith(FILE):
            self._injection(name, "file", name[len(FILE) :], value)
        elif name.startswith(ENV):
            self._injection(name, "env", name[len(ENV) :], value)
        elif name == VAULT_ROLE:
            self.vault_role = self._role(name, value)
        elif name == AWS_REGION:
            self.aws_region = self._region(name, value)
        elif name == CONTAINERS:
            self.containers = self._containers(name, value)
        elif name == MOUNT_PATH:
            self.mount_path = self._mount_path(name, value)
        elif name == STATUS:
            if value != INJECTED:
                self.problem(
                    name,
                    f"is set by the webhook, got {show(value)} (remove this annotation)",
                )
        else:
            self.unknown.append(UnknownKey(self.prefix + name, suggest_key(name)))

    def result(self) -> PodInjection:
        if not self.injections and not self.problems:
            self.problem(
                INJECT,
                f"pod is opted in but has no {self.prefix}{FILE}<filename> or "
                f"{self.prefix}{ENV}<NAME> annotation (add one, or remove {self.prefix}{INJECT})",
            )
        self._check_ssm_files()
        self._check_arn_regions()
        if self.problems:
            raise AnnotationError(self.problems)
        return PodInjection(
            injections=tuple(self.injections),
            vault_role=self.vault_role,
            aws_region=self.aws_region,
            containers=self.containers,
            mount_path=self.mount_path or self.settings.default_mount_path,
            unknown_keys=tuple(self.unknown),
        )

    def _injection(self, name: str, delivery: Delivery, target: str, value: str) -> None:
        target_problem = (
            _file_name_problem(target) if delivery == "file" else _env_name_problem(target)
        )
        if target_problem is not None:
            self.problem(name, target_problem)
        ref, problems = _reference(value)
        for what in problems:
            self.problem(name, what)
        if ref is not None and target_problem is None:
            self.injections.append(Injection(self.prefix + name, delivery, target, ref))

    def _role(self, name: str, value: str) -> str | None:
        if not value:
            self.problem(name, "is empty (name the Vault role, or remove the annotation)")
        elif len(value) > MAX_ROLE:
            self.problem(name, f"is {len(value)} characters, the limit is {MAX_ROLE}")
        elif (bad := _first_outside(value, _ROLE)) is not None:
            self.problem(
                name,
                f"contains {_char(bad)}; a Vault role name has letters, digits and . _ - @",
            )
        else:
            return value
        return None

    def _region(self, name: str, value: str) -> str | None:
        if _REGION.fullmatch(value):
            return value
        self.problem(name, f"{show(value)} is not an AWS region name such as us-east-1")
        return None

    def _containers(self, name: str, value: str) -> tuple[str, ...] | None:
        if len(value) > MAX_CONTAINERS:
            self.problem(name, f"is {len(value)} characters, the limit is {MAX_CONTAINERS}")
            return None
        if not value.strip():
            self.problem(name, "is empty (list container names, e.g. app,worker)")
            return None
        names: list[str] = []
        ok = True
        for item in value.split(","):
            container = item.strip()
            if not container:
                self.problem(name, "has an empty container name (check for a stray comma)")
                ok = False
            elif not _DNS_LABEL.fullmatch(container):
                self.problem(
                    name,
                    f"{show(container)} is not a container name (lowercase letters, digits "
                    "and '-', at most 63)",
                )
                ok = False
            elif container not in names:
                names.append(container)
        return tuple(names) if ok else None

    def _mount_path(self, name: str, value: str) -> str | None:
        what = _mount_path_problem(value)
        if what is None:
            return value
        self.problem(name, what)
        return None

    def _check_ssm_files(self) -> None:
        """The AWS provider batches SSM parameters by name: one parameter, one file."""
        seen: dict[AwsParameterRef, Injection] = {}
        for injection in self.injections:
            ref = injection.ref
            if injection.delivery != "file" or not isinstance(ref, AwsParameterRef):
                continue
            first = seen.setdefault(ref, injection)
            if first is not injection:
                self.problems.append(
                    f"annotation {injection.annotation}: {first.annotation} already delivers "
                    f"{ref} as a file, and the AWS provider writes an SSM parameter to one "
                    "file only (keep one of the two annotations)"
                )

    def _check_arn_regions(self) -> None:
        """The AWS provider refuses an ARN from another region than the one it mounts from."""
        region = self.aws_region or self.settings.providers.aws.region
        source = f"{self.prefix}{AWS_REGION}" if self.aws_region else "the configured region"
        first: tuple[Injection, str] | None = None
        for injection in self.injections:
            arn_region = arn_region_of(injection.ref)
            if arn_region is None:
                continue
            if region is not None and arn_region != region:
                self.problems.append(
                    f"annotation {injection.annotation}: the ARN is in region {arn_region} but "
                    f"the pod mounts AWS secrets from {region} ({source}); set "
                    f"{self.prefix}{AWS_REGION}: {arn_region} or name the secret instead"
                )
            elif first is None:
                first = (injection, arn_region)
            elif region is None and arn_region != first[1]:
                self.problems.append(
                    f"annotation {injection.annotation}: the ARN is in region {arn_region} but "
                    f"{first[0].annotation} names one in {first[1]}; a pod mounts AWS secrets "
                    f"from one region (set {self.prefix}{AWS_REGION})"
                )


def arn_region_of(ref: SecretRef) -> str | None:
    """The region of a Secrets Manager ARN reference, None for names and other schemes."""
    if isinstance(ref, AwsSecretRef):
        match = _SM_ARN.fullmatch(ref.name)
        if match:
            return match.group("region")
    return None


def _file_name_problem(target: str) -> str | None:
    if not target:
        return "the file name after file. is empty (write file.<filename>)"
    if "/" in target:
        return f"file name {show(target)} contains '/' (a file name, not a path)"
    if target in (".", ".."):
        return f"file name {show(target)} is not a file name"
    if len(target) > MAX_FILE_NAME:
        return f"file name is {len(target)} characters, the limit is {MAX_FILE_NAME}"
    if (bad := _first_outside(target, _FILE_NAME)) is not None:
        return f"file name contains {_char(bad)}; use letters, digits, '.', '-' and '_'"
    if target.startswith(".."):
        return f"file name {show(target)} starts with '..', reserved by the CSI driver"
    if target.startswith(RESERVED_FILE_PREFIX):
        return f"file names starting with {RESERVED_FILE_PREFIX} are reserved for secret-injector"
    return None


def _env_name_problem(target: str) -> str | None:
    if not target:
        return "the variable name after env. is empty (write env.<NAME>)"
    if (bad := _first_outside(target, _ENV_CHARS)) is not None:
        return f"variable name contains {_char(bad)}; use letters, digits, '_', '-' and '.'"
    if not _ENV_NAME.fullmatch(target):
        return f"variable name {show(target)} must not start with a digit"
    if target == "." or target.startswith(".."):
        return f"variable name {show(target)} cannot be a Secret key ('.' and '..' are reserved)"
    return None


def _mount_path_problem(value: str) -> str | None:
    if not value:
        return "is empty (write an absolute path such as /mnt/secrets)"
    if len(value) > MAX_MOUNT_PATH:
        return f"is {len(value)} characters, the limit is {MAX_MOUNT_PATH}"
    if (bad := _first_invisible(value)) is not None:
        return f"contains {_char(bad)} at character {value.index(bad) + 1}"
    if not value.startswith("/"):
        return f"{show(value)} is not an absolute path (start it with /)"
    if value == "/":
        return "must not be / (choose a directory such as /mnt/secrets)"
    if ".." in value.split("/"):
        return f"{show(value)} must not contain '..'"
    normal = posixpath.normpath(value)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    if normal != value:
        return f"{show(value)} is not normalized (write {show(normal)})"
    return None


def _reference(value: str) -> tuple[SecretRef | None, list[str]]:
    """Parse a reference: (the ref, []) or (None, [problem, ...])."""
    if not value:
        return None, [f"the reference is empty (write a reference such as {_EXAMPLES['vault']})"]
    if len(value) > MAX_REFERENCE:
        return None, [f"the reference is {len(value)} characters, the limit is {MAX_REFERENCE}"]
    if (bad := _first_invisible(value)) is not None:
        return None, [
            f"the reference contains {_char(bad)} at character {value.index(bad) + 1} "
            "(references have no spaces or invisible characters)"
        ]
    scheme, colon, rest = value.partition(":")
    if scheme not in SCHEMES:
        return None, [_scheme_problem(value, scheme, colon)]
    if scheme == "vault":
        return _vault(rest)
    if scheme == "aws-sm":
        return _aws_secret(rest)
    return _aws_parameter(rest)


def _scheme_problem(value: str, scheme: str, colon: str) -> str:
    known = "vault:, aws-sm: or aws-ssm:"
    if not colon or not _SCHEME_LIKE.fullmatch(scheme):
        return f"the value is not a reference: it must start with {known} (value not shown)"
    lowered = scheme.lower()
    if lowered == "arn":
        service = value.split(":")[2] if value.count(":") >= 2 else ""
        if service == "secretsmanager":
            return (
                'unknown scheme "arn:", did you mean "aws-sm:arn:..."? '
                f"(references start with {known})"
            )
        if service == "ssm":
            return (
                'unknown scheme "arn:"; for SSM write "aws-ssm:<parameter-name>" '
                f"(references start with {known})"
            )
    if lowered in SCHEMES:
        guess: str | None = lowered
    elif lowered in _SCHEME_ALIASES:
        guess = _SCHEME_ALIASES[lowered]
    elif lowered in ("aws", "amazon"):
        return (
            f'unknown scheme "{scheme}:", did you mean "aws-sm:" (Secrets Manager) or '
            f'"aws-ssm:" (Parameter Store)? (references start with {known})'
        )
    else:
        close = difflib.get_close_matches(lowered, SCHEMES, n=1, cutoff=0.6)
        guess = close[0] if close else None
    if guess is None:
        # Not a near miss: `scheme` may be the head of a secret that contains a colon.
        return f"unknown scheme (references start with {known}; value not shown)"
    return f'unknown scheme "{scheme}:", did you mean "{guess}:"? (references start with {known})'


@dataclass(frozen=True, slots=True)
class _Parts:
    """`<main>[#<key>][?<query>]` split once, with the problems of the split itself."""

    main: str
    key: str | None
    query: dict[str, str]
    problems: list[str]


def _split(rest: str, scheme: str, allowed: tuple[str, ...]) -> _Parts:
    problems: list[str] = []
    main, qmark, query_text = rest.partition("?")
    if qmark and "#" in query_text and "#" not in main:
        # `vault:<path>?version=2#key`: say so once, and read it as meant.
        problems.append(f"the #<key> goes before the query (write {scheme}:<path>#<key>?<query>)")
        query_text, _, misplaced = query_text.partition("#")
        main = f"{main}#{misplaced}"
    path, hash_sign, key = main.partition("#")
    if hash_sign and "#" in key:
        problems.append("the reference has more than one '#'")
        key = key.partition("#")[0]
    query = _query(query_text, scheme, allowed, problems) if qmark else {}
    return _Parts(path, key if hash_sign else None, query, problems)


def _query(text: str, scheme: str, allowed: tuple[str, ...], problems: list[str]) -> dict[str, str]:
    accepts = " or ".join(f"?{a}=" for a in allowed) if allowed else "no query"
    if not text:
        problems.append(f"the query after '?' is empty ({scheme} references accept {accepts})")
        return {}
    params: dict[str, str] = {}
    for item in text.split("&"):
        name, equals, val = item.partition("=")
        if not name:
            problems.append(
                f"the query has an empty parameter ({scheme} references accept {accepts})"
            )
        elif name not in allowed:
            close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
            hint = f', did you mean "{close[0]}"?' if close else ""
            problems.append(
                f"unknown query parameter {show(name)}{hint} ({scheme} references accept {accepts})"
            )
        elif name in params:
            problems.append(f"query parameter {name} is given more than once")
        elif not equals or not val:
            problems.append(f"query parameter {name} has no value (write ?{name}=<value>)")
        else:
            params[name] = val
    return params


def _vault(rest: str) -> tuple[SecretRef | None, list[str]]:
    parts = _split(rest, "vault", ("version",))
    problems = list(parts.problems)
    problems += _vault_path_problems(parts.main)
    if parts.key is None:
        problems.append(
            "a vault reference needs #<key> after the path (write vault:<path>#<key>, "
            f"e.g. {_EXAMPLES['vault']})"
        )
    elif not parts.key:
        problems.append("the key after '#' is empty (write vault:<path>#<key>)")
    version: int | None = None
    if "version" in parts.query:
        version = _positive_int(parts.query["version"], problems)
        segments = parts.main.split("/")
        if version is not None and "data" not in segments[1:-1]:
            problems.append(
                "?version= pins a KV v2 version, but the path has no data/ segment (KV v2 "
                "paths look like secret/data/app/db)"
            )
    if problems:
        return None, problems
    assert parts.key is not None
    return VaultRef(parts.main, parts.key, version), []


def _vault_path_problems(path: str) -> list[str]:
    if not path:
        return [f"the path is empty (write vault:<path>#<key>, e.g. {_EXAMPLES['vault']})"]
    if path.startswith("//"):
        return ["the path starts with '//': write vault:<path>#<key>, not vault://..."]
    if path.startswith("/"):
        return [
            "the path must not start with '/' (write the API path without it, e.g. "
            "vault:secret/data/app/db#password)"
        ]
    if path.startswith("v1/"):
        return ["the path must not start with v1/ (write the API path after /v1/)"]
    if path.endswith("/"):
        return ["the path must not end with '/' (name a secret, not a folder)"]
    problems: list[str] = []
    segments = path.split("/")
    if "" in segments:
        problems.append("the path has an empty segment ('//')")
    if "." in segments or ".." in segments:
        problems.append("the path must not contain '.' or '..' segments")
    bad = next((c for c in path if c != "/" and c not in _VAULT_SEGMENT_CHARS), None)
    if bad is not None:
        problems.append(
            f"the path contains {_char(bad)}; use letters, digits and . _ - @ + = , ~ "
            "between the slashes"
        )
    return problems


def _positive_int(text: str, problems: list[str]) -> int | None:
    if not text.isascii() or not text.isdigit() or text.startswith("0"):
        problems.append(f"version must be a whole number from 1, got {show(text)}")
        return None
    if len(text) > 10 or int(text) > _MAX_VERSION:
        problems.append(f"version {show(text)} is too large")
        return None
    return int(text)


def _aws_secret(rest: str) -> tuple[SecretRef | None, list[str]]:
    parts = _split(rest, "aws-sm", ("version-stage", "version-id"))
    problems = list(parts.problems)
    name = parts.main
    if not name:
        problems.append(
            f"the secret name is empty (write aws-sm:<name-or-arn>, e.g. {_EXAMPLES['aws-sm']})"
        )
    elif name.startswith("arn:"):
        problems += _arn_problems(name)
    elif len(name) > 512:
        problems.append(f"the secret name is {len(name)} characters, the limit is 512")
    elif (bad := next((c for c in name if c not in _SM_NAME_CHARS), None)) is not None:
        problems.append(
            f"the secret name contains {_char(bad)}; Secrets Manager names have letters, "
            "digits and / _ + = . @ -"
        )
    if parts.key is not None and not parts.key:
        problems.append("the JSON key after '#' is empty (write aws-sm:<name>#<json-key>)")
    stage = parts.query.get("version-stage")
    version_id = parts.query.get("version-id")
    if stage is not None and version_id is not None:
        problems.append("set either ?version-stage= or ?version-id=, not both")
    if stage is not None and not _STAGE.fullmatch(stage):
        problems.append(
            f"version-stage {show(stage)} is not a stage label such as AWSPREVIOUS "
            "(letters, digits and _ + = . @ -, at most 256)"
        )
    if version_id is not None and not _VERSION_ID.fullmatch(version_id):
        problems.append(
            f"version-id {show(version_id)} is not a Secrets Manager version id "
            "(32 to 64 letters, digits and '-')"
        )
    if problems:
        return None, problems
    return AwsSecretRef(name, parts.key, stage, version_id), []


def _arn_problems(arn: str) -> list[str]:
    fields = arn.split(":")
    if len(fields) > 2 and fields[2] == "ssm":
        return ["this is an SSM parameter ARN: write aws-ssm:<parameter-name>"]
    if _SM_ARN.fullmatch(arn):
        return []
    return [
        "the ARN is not a Secrets Manager secret ARN "
        "(arn:aws:secretsmanager:<region>:<account-id>:secret:<name>)"
    ]


def _aws_parameter(rest: str) -> tuple[SecretRef | None, list[str]]:
    main, qmark, _ = rest.partition("?")
    name, hash_sign, _ = main.partition("#")
    problems: list[str] = []
    if hash_sign:
        problems.append("aws-ssm references take no #<key> (an SSM parameter has one value)")
    if qmark:
        problems.append("aws-ssm references take no query (?...) parameters")
    if not name:
        problems.append(
            f"the parameter name is empty (write aws-ssm:<name>, e.g. {_EXAMPLES['aws-ssm']})"
        )
    elif name.startswith("arn:"):
        problems.append("write the parameter's name, not its ARN (aws-ssm:/prod/app/key)")
    elif len(name) > _SSM_MAX_NAME:
        problems.append(
            f"the parameter name is {len(name)} characters, the limit is {_SSM_MAX_NAME}"
        )
    elif (bad := next((c for c in name if c not in _SSM_NAME_CHARS), None)) is not None:
        extra = " (version selectors such as name:3 are not supported)" if bad == ":" else ""
        problems.append(
            f"the parameter name contains {_char(bad)}; SSM names have letters, digits and "
            f"_ . - /{extra}"
        )
    elif "/" in name:
        if not name.startswith("/"):
            problems.append(
                "a parameter name with '/' must start with '/' (e.g. aws-ssm:/prod/app/key)"
            )
        elif name.endswith("/") or "//" in name:
            problems.append("the parameter name has an empty '/' segment")
        elif name.count("/") > _SSM_MAX_DEPTH:
            problems.append(f"the parameter name has more than {_SSM_MAX_DEPTH} levels")
    if problems:
        return None, problems
    return AwsParameterRef(name), []


def _first_invisible(text: str) -> str | None:
    """The first control, whitespace or otherwise invisible character, if any."""
    if _VISIBLE_ASCII.fullmatch(text):  # the common case, without a loop in Python
        return None
    return next((c for c in text if not c.isprintable() or c.isspace()), None)


def _first_outside(text: str, allowed: re.Pattern[str]) -> str | None:
    if allowed.fullmatch(text):
        return None
    return next((c for c in text if not allowed.fullmatch(c)), None)


def _char(char: str) -> str:
    """Name a character for a message: 'a space', 'U+0007 (a control character)', "'%'"."""
    if char == " ":
        return "a space"
    code = f"U+{ord(char):04X}"
    if unicodedata.category(char) == "Cc":
        return f"{code} (a control character)"
    if char.isspace():
        return f"{code} (whitespace)"
    if not char.isprintable():
        return f"{code} (an invisible character)"
    return f"'{char}'" if char.isascii() else f"'{char}' ({code})"
