"""Policy: which references a namespace may use and how secrets may be exposed. No I/O.

`Policy()` is the DESIGN.md default policy; webhook/policy_file.py reads one from YAML
(the dataclasses below are its schema: `allowed_refs` is the key `allowedRefs`).
`check()` returns every violation of a pod, each already carrying its action: in `audit`
mode every `deny` becomes `warn`. The same rules run at /mutate (on the incoming pod,
before any backend call) and at /validate (on the final pod); their lines are identical
at both stages, and the API server sends identical warnings once (its warning recorder
deduplicates by text: k8s.io/apiserver/pkg/endpoints/filters/warning.go).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from webhook import globs, plaintext
from webhook.refs import Delivery, Injection, PodInjection, SecretRef, VaultRef
from webhook.review import AdmissionRequest

Action = Literal["deny", "warn", "off"]
Mode = Literal["enforce", "audit"]

# The API server advises warnings of 120 characters or fewer; every line stays under that.
MAX_LINE = 119
_ELLIPSIS = "..."
_SHORTEST = 12  # a shortened name keeps at least this much of itself

# Kubernetes' own default for secret volumes when defaultMode is unset (0644).
KUBERNETES_DEFAULT_MODE = 0o644
CONTAINER_FIELDS = ("containers", "initContainers", "ephemeralContainers")
# The rules, by the names the policy file, violation lines and metrics use.
RULES = (
    "allowedRefs",
    "plaintextSecrets",
    "secretVolumes",
    "envFromSecrets",
    "unknownAnnotations",
    "delivery",
)


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule: `<rule>: <where>: <what> (<how to fix>)`, never a secret value."""

    rule: str
    where: str  # the annotation, container, env var or volume
    what: str
    fix: str
    action: Literal["deny", "warn"]

    @property
    def line(self) -> str:
        """The violation on one line, under MAX_LINE characters (long names shortened)."""
        parts = [self.rule, self.where, self.what, self.fix]
        line = _compose(parts)
        while len(line) > MAX_LINE and _shorten_longest_word(parts, len(line) - MAX_LINE):
            line = _compose(parts)
        if len(line) > MAX_LINE:  # only fixed texts are left: cannot happen with ours
            line = line[: MAX_LINE - len(_ELLIPSIS)] + _ELLIPSIS
        return line


def _compose(parts: list[str]) -> str:
    rule, where, what, fix = parts
    return f"{rule}: {where}: {what} ({fix})"


def _shorten_longest_word(parts: list[str], excess: int) -> bool:
    """Cut the middle out of the longest word (a name or a path); False if none can shrink."""
    best: tuple[int, int, int] | None = None  # (length, part index, word index)
    for p, part in enumerate(parts[1:], start=1):
        for w, word in enumerate(part.split(" ")):
            # Only words longer than a shortened word can shrink: the loop always ends.
            if len(word) > _SHORTEST + len(_ELLIPSIS) and (best is None or len(word) > best[0]):
                best = (len(word), p, w)
    if best is None:
        return False
    length, p, w = best
    keep = max(_SHORTEST, length - excess - len(_ELLIPSIS))
    words = parts[p].split(" ")
    word = words[w]
    head = (keep + 1) // 2
    words[w] = word[:head] + _ELLIPSIS + word[len(word) - (keep - head) :]
    parts[p] = " ".join(words)
    return True


@dataclass(frozen=True, slots=True)
class RefGrant:
    """References that pods in the matching namespaces (and service accounts) may use."""

    refs: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ("*",)
    exclude_namespaces: tuple[str, ...] = ()
    service_accounts: tuple[str, ...] = ("*",)

    def __post_init__(self) -> None:
        if not self.refs:
            raise ValueError("refs must list at least one reference glob")
        for glob in self.refs:
            globs.check_ref_glob(glob)
        _check_names("namespaces", self.namespaces)
        _check_names("excludeNamespaces", self.exclude_namespaces, empty_ok=True)
        _check_names("serviceAccounts", self.service_accounts)

    def applies_to(self, namespace: str, service_account: str) -> bool:
        return _selects(self.namespaces, self.exclude_namespaces, namespace) and any(
            globs.name_matches(g, service_account) for g in self.service_accounts
        )


@dataclass(frozen=True, slots=True)
class DeliveryGrant:
    """Delivery kinds that pods in the matching namespaces may use."""

    kinds: tuple[Delivery, ...] = ("file", "env")
    namespaces: tuple[str, ...] = ("*",)
    exclude_namespaces: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.kinds:
            raise ValueError("kinds must list file, env or both")
        _check_names("namespaces", self.namespaces)
        _check_names("excludeNamespaces", self.exclude_namespaces, empty_ok=True)

    def applies_to(self, namespace: str) -> bool:
        return _selects(self.namespaces, self.exclude_namespaces, namespace)


def _check_names(key: str, names: tuple[str, ...], *, empty_ok: bool = False) -> None:
    if not names and not empty_ok:
        raise ValueError(f'{key} must list at least one name or glob ("*" for all)')
    for name in names:
        try:
            globs.check_name_glob(name)
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None


def _selects(include: tuple[str, ...], exclude: tuple[str, ...], name: str) -> bool:
    return any(globs.name_matches(g, name) for g in include) and not any(
        globs.name_matches(g, name) for g in exclude
    )


DEFAULT_REF_GRANTS = (
    RefGrant(
        refs=(
            "vault:secret/data/{namespace}/*",
            "aws-sm:{namespace}/*",
            "aws-ssm:/{namespace}/*",
        )
    ),
)


@dataclass(frozen=True, slots=True)
class AllowedRefsRule:
    """Tenancy: a reference is allowed when a grant that applies to the pod matches it."""

    action: Action = "deny"
    grants: tuple[RefGrant, ...] = DEFAULT_REF_GRANTS


@dataclass(frozen=True, slots=True)
class DeliveryRule:
    """A delivery kind is allowed when a grant that applies to the namespace lists it."""

    action: Action = "deny"
    grants: tuple[DeliveryGrant, ...] = (DeliveryGrant(),)


@dataclass(frozen=True, slots=True)
class PlaintextSecretsRule:
    action: Action = "deny"
    # Env var name globs never reported (e.g. a variable known to hold a public key).
    ignore_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SecretVolumesRule:
    action: Action = "deny"
    max_mode: int = 0o440

    def __post_init__(self) -> None:
        if not 0 <= self.max_mode <= 0o777:
            raise ValueError(
                f"maxMode must be a file mode from 0000 to 0777, got {self.max_mode:04o}"
            )


@dataclass(frozen=True, slots=True)
class EnvFromSecretsRule:
    action: Action = "warn"


@dataclass(frozen=True, slots=True)
class UnknownAnnotationsRule:
    action: Action = "deny"


@dataclass(frozen=True, slots=True)
class Policy:
    """The platform's policy; `Policy()` is the DESIGN.md default."""

    mode: Mode = "enforce"
    allowed_refs: AllowedRefsRule = field(default_factory=AllowedRefsRule)
    plaintext_secrets: PlaintextSecretsRule = field(default_factory=PlaintextSecretsRule)
    secret_volumes: SecretVolumesRule = field(default_factory=SecretVolumesRule)
    env_from_secrets: EnvFromSecretsRule = field(default_factory=EnvFromSecretsRule)
    unknown_annotations: UnknownAnnotationsRule = field(default_factory=UnknownAnnotationsRule)
    delivery: DeliveryRule = field(default_factory=DeliveryRule)

    def action(self, configured: Action) -> Literal["deny", "warn"] | None:
        """What a rule does under this policy's mode (audit: deny becomes warn); None: off."""
        if configured == "off":
            return None
        return "warn" if self.mode == "audit" else configured


def check(
    req: AdmissionRequest, pod: PodInjection | None, policy: Policy, stage: str
) -> list[Violation]:
    """Every violation of `policy` by the request, denials and warnings alike.

    `pod` is what the annotations ask for (None when the pod is not opted in); the pod spec
    rules read `req.pod`. `stage` ("mutate" or "validate") does not change the verdict.
    """
    del stage
    found: list[Violation] = []
    if pod is not None:
        found += _unknown_annotations(pod, policy)
        found += _allowed_refs(req, pod, policy)
        found += _delivery(req, pod, policy)
    if req.pod is not None:
        spec = req.pod.get("spec")
        if isinstance(spec, dict):
            found += _plaintext_secrets(spec, policy)
            found += _secret_volumes(spec, policy)
            found += _env_from_secrets(spec, policy)
    return found


# --- annotation rules -------------------------------------------------------------------


def _unknown_annotations(pod: PodInjection, policy: Policy) -> list[Violation]:
    action = policy.action(policy.unknown_annotations.action)
    if action is None:
        return []
    return [
        Violation(
            "unknownAnnotations",
            unknown.annotation,
            "unknown annotation",
            f"did you mean {unknown.suggestion}?"
            if unknown.suggestion
            else "see the README for the annotation keys",
            action,
        )
        for unknown in pod.unknown_keys
    ]


def subject(ref: SecretRef) -> str:
    """What reference globs match: `scheme:path-or-name`, without key, version or stage."""
    path = ref.path if isinstance(ref, VaultRef) else ref.name
    return f"{ref.scheme}:{path}"


def _allowed_refs(req: AdmissionRequest, pod: PodInjection, policy: Policy) -> list[Violation]:
    action = policy.action(policy.allowed_refs.action)
    if action is None:
        return []
    namespace, account = req.namespace, req.service_account
    grants = [g for g in policy.allowed_refs.grants if g.applies_to(namespace, account)]
    found = []
    for injection in pod.injections:
        ref = subject(injection.ref)
        problem = globs.canonical_problem(ref.partition(":")[2])
        if problem is not None:
            found.append(
                Violation(
                    "allowedRefs",
                    injection.annotation,
                    f"path has {problem}",
                    "write the path in its canonical form",
                    action,
                )
            )
        elif not any(globs.ref_matches(g, ref, namespace, account) for r in grants for g in r.refs):
            found.append(_not_allowed(injection, ref, grants, namespace, account, action))
    return found


def _not_allowed(
    injection: Injection,
    ref: str,
    grants: list[RefGrant],
    namespace: str,
    account: str,
    action: Literal["deny", "warn"],
) -> Violation:
    scheme = injection.ref.scheme
    allowed = [
        globs.expand(g, namespace, account)
        for grant in grants
        for g in grant.refs
        if g.startswith(scheme + ":")
    ]
    if not allowed:
        fix = f"no {scheme} reference is granted here; ask the platform team"
    elif len(allowed) == 1:
        fix = f"use {allowed[0]}"
    else:
        fix = f"use {allowed[0]} or {len(allowed) - 1} more"
    return Violation("allowedRefs", injection.annotation, f"{ref} not allowed", fix, action)


def _delivery(req: AdmissionRequest, pod: PodInjection, policy: Policy) -> list[Violation]:
    action = policy.action(policy.delivery.action)
    if action is None:
        return []
    allowed = {
        kind
        for grant in policy.delivery.grants
        if grant.applies_to(req.namespace)
        for kind in grant.kinds
    }
    found = []
    for injection in pod.injections:
        if injection.delivery in allowed:
            continue
        other = "file" if injection.delivery == "env" else "env"
        fix = (
            f"use a {other}.<name> annotation"
            if other in allowed
            else "no delivery is granted here; ask the platform team"
        )
        what = f"{injection.delivery} delivery not allowed in {req.namespace}"
        found.append(Violation("delivery", injection.annotation, what, fix, action))
    return found


# --- pod spec rules ---------------------------------------------------------------------


def _containers(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(`container app`, container) for app, init and ephemeral containers alike.

    Container names are unique across the three lists, so the name alone says which.
    """
    for list_field in CONTAINER_FIELDS:
        items = spec.get(list_field)
        if not isinstance(items, list):
            continue
        for container in items:
            if isinstance(container, dict):
                yield f"container {container.get('name')}", container


def _items(container: Mapping[str, Any], key: str) -> Iterator[Mapping[str, Any]]:
    items = container.get(key)
    if isinstance(items, list):
        yield from (item for item in items if isinstance(item, dict))


def _plaintext_secrets(spec: Mapping[str, Any], policy: Policy) -> list[Violation]:
    rule = policy.plaintext_secrets
    action = policy.action(rule.action)
    if action is None:
        return []
    fix = "use an env.* annotation"
    found = []
    for where, container in _containers(spec):
        for env in _items(container, "env"):
            name, value = env.get("name"), env.get("value")
            if not isinstance(name, str) or not isinstance(value, str):
                continue  # valueFrom, or no value: nothing literal
            if rule.ignore_names and any(globs.name_matches(g, name) for g in rule.ignore_names):
                continue
            looks_like = plaintext.secret_format(value)
            if looks_like is not None:
                what = f"looks like {looks_like}"
            elif plaintext.is_secret_name(name) and not plaintext.is_placeholder(value):
                what = "secret-like name, literal value"
            else:
                continue
            found.append(Violation("plaintextSecrets", f"{where} env {name}", what, fix, action))
    return found


def _secret_volumes(spec: Mapping[str, Any], policy: Policy) -> list[Violation]:
    rule = policy.secret_volumes
    action = policy.action(rule.action)
    if action is None:
        return []
    found: list[Violation] = []
    secret_volumes: set[str] = set()
    volumes = spec.get("volumes")
    for volume in volumes if isinstance(volumes, list) else []:
        if not isinstance(volume, dict) or not isinstance(volume.get("name"), str):
            continue
        where = f"volume {volume['name']}"
        secret = volume.get("secret")
        projected = volume.get("projected")
        if isinstance(secret, dict):
            secret_volumes.add(volume["name"])
            found += _modes(where, secret.get("defaultMode"), [secret], rule.max_mode, action)
        elif isinstance(projected, dict):
            sources = projected.get("sources")
            secrets = [
                s["secret"]
                for s in (sources if isinstance(sources, list) else [])
                if isinstance(s, dict) and isinstance(s.get("secret"), dict)
            ]
            if secrets:
                secret_volumes.add(volume["name"])
                found += _modes(where, projected.get("defaultMode"), secrets, rule.max_mode, action)
    for where, container in _containers(spec):
        for mount in _items(container, "volumeMounts"):
            if mount.get("name") in secret_volumes and mount.get("readOnly") is not True:
                found.append(
                    Violation(
                        "secretVolumes",
                        f"{where} mount {mount.get('name')}",
                        "secret volume mounted writable",
                        "set readOnly: true",
                        action,
                    )
                )
    return found


def _modes(
    where: str,
    default_mode: Any,
    sources: list[Mapping[str, Any]],
    max_mode: int,
    action: Literal["deny", "warn"],
) -> list[Violation]:
    found = []
    if default_mode is None:
        if KUBERNETES_DEFAULT_MODE & ~max_mode:
            found.append(
                Violation(
                    "secretVolumes",
                    where,
                    f"defaultMode unset (0644) is wider than {max_mode:04o}",
                    f"set defaultMode: {max_mode:04o}",
                    action,
                )
            )
    elif isinstance(default_mode, int) and default_mode & ~max_mode:
        found.append(
            Violation(
                "secretVolumes",
                where,
                f"defaultMode {default_mode:04o} is wider than {max_mode:04o}",
                f"set defaultMode: {max_mode:04o}",
                action,
            )
        )
    for source in sources:
        for item in _items(source, "items"):
            mode = item.get("mode")
            if isinstance(mode, int) and mode & ~max_mode:
                found.append(
                    Violation(
                        "secretVolumes",
                        f"{where} item {item.get('key')}",
                        f"mode {mode:04o} is wider than {max_mode:04o}",
                        f"set mode: {max_mode:04o} or narrower",
                        action,
                    )
                )
    return found


def _env_from_secrets(spec: Mapping[str, Any], policy: Policy) -> list[Violation]:
    action = policy.action(policy.env_from_secrets.action)
    if action is None:
        return []
    found = []
    for where, container in _containers(spec):
        for source in _items(container, "envFrom"):
            ref = source.get("secretRef")
            if isinstance(ref, dict):
                found.append(
                    Violation(
                        "envFromSecrets",
                        f"{where} envFrom secret {ref.get('name')}",
                        "imports every key",
                        "use secretKeyRef for the keys you need",
                        action,
                    )
                )
    return found
