"""policy.check: one pod per rule, denied with its exact line; audit mode makes it a warning."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from tests.policy.pods import PREFIX, container, env, injections, request
from webhook.policy import (
    AllowedRefsRule,
    DeliveryGrant,
    DeliveryRule,
    EnvFromSecretsRule,
    PlaintextSecretsRule,
    Policy,
    RefGrant,
    SecretVolumesRule,
    UnknownAnnotationsRule,
    check,
)
from webhook.refs import PodInjection, UnknownKey
from webhook.review import AdmissionRequest

FILE_ONLY = Policy(delivery=DeliveryRule(grants=(DeliveryGrant(kinds=("file",)),)))
DENY_ENV_FROM = Policy(env_from_secrets=EnvFromSecretsRule(action="deny"))
SECRET_VOLUME = {"name": "creds", "secret": {"secretName": "db", "defaultMode": 0o440}}
READ_ONLY_MOUNT = {"name": "creds", "mountPath": "/creds", "readOnly": True}


DEFAULT = Policy()


@dataclass(frozen=True)
class Case:
    req: AdmissionRequest
    pod: PodInjection | None
    line: str
    policy: Policy = DEFAULT


CASES = {
    "unknown-annotation": Case(
        request(),
        PodInjection((), unknown_keys=(UnknownKey(PREFIX + "flie.db", "file.db"),)),
        "unknownAnnotations: secret-injector.io/flie.db: unknown annotation "
        "(did you mean file.db?)",
    ),
    "other-tenant-vault": Case(
        request(),
        injections(env_DB="vault:secret/data/team-b/db#password"),
        "allowedRefs: secret-injector.io/env.DB: vault:secret/data/team-b/db not allowed "
        "(use vault:secret/data/team-a/*)",
    ),
    "other-tenant-aws-sm": Case(
        request(),
        injections(file_db="aws-sm:team-b/db"),
        "allowedRefs: secret-injector.io/file.db: aws-sm:team-b/db not allowed "
        "(use aws-sm:team-a/*)",
    ),
    "other-tenant-ssm": Case(
        request(),
        injections(file_db="aws-ssm:/team-b/db"),
        "allowedRefs: secret-injector.io/file.db: aws-ssm:/team-b/db not allowed "
        "(use aws-ssm:/team-a/*)",
    ),
    "path-traversal": Case(
        request(),
        injections(file_db="vault:secret/data/team-a/../team-b/db#password"),
        "allowedRefs: secret-injector.io/file.db: path has a '..' segment "
        "(write the path in its canonical form)",
    ),
    "env-delivery-forbidden": Case(
        request(),
        injections(env_DB="vault:secret/data/team-a/db#password"),
        "delivery: secret-injector.io/env.DB: env delivery not allowed in team-a "
        "(use a file.<name> annotation)",
        FILE_ONLY,
    ),
    "plaintext-name": Case(
        request({"containers": [container("app", env=env(DB_PASSWORD="hunter2"))]}),
        None,
        "plaintextSecrets: container app env DB_PASSWORD: secret-like name, literal value "
        "(use an env.* annotation)",
    ),
    "plaintext-init-aws-key": Case(
        request(
            {
                "initContainers": [container("migrate", env=env(AWS_KEY="AKIAIOSFODNN7EXAMPLE"))],
            }
        ),
        None,
        "plaintextSecrets: container migrate env AWS_KEY: looks like an AWS access key id "
        "(use an env.* annotation)",
    ),
    "plaintext-ephemeral-url": Case(
        request(
            {
                "ephemeralContainers": [
                    container("debug", env=env(DATABASE_URL="postgres://app:s3cr3t@db:5432/app"))
                ],
            }
        ),
        None,
        "plaintextSecrets: container debug env DATABASE_URL: looks like a URL with a password "
        "(use an env.* annotation)",
    ),
    "secret-volume-wide-mode": Case(
        request(
            {
                "volumes": [
                    {"name": "creds", "secret": {"secretName": "db", "defaultMode": 0o644}}
                ],
                "containers": [container("app", volumeMounts=[READ_ONLY_MOUNT])],
            }
        ),
        None,
        "secretVolumes: volume creds: defaultMode 0644 is wider than 0440 (set defaultMode: 0440)",
    ),
    "secret-volume-mode-unset": Case(
        request({"volumes": [{"name": "creds", "secret": {"secretName": "db"}}]}),
        None,
        "secretVolumes: volume creds: defaultMode unset (0644) is wider than 0440 "
        "(set defaultMode: 0440)",
    ),
    "secret-volume-item-mode": Case(
        request(
            {
                "volumes": [
                    {
                        "name": "creds",
                        "secret": {
                            "secretName": "tls",
                            "defaultMode": 0o400,
                            "items": [{"key": "tls.key", "path": "tls.key", "mode": 0o600}],
                        },
                    }
                ]
            }
        ),
        None,
        "secretVolumes: volume creds item tls.key: mode 0600 is wider than 0440 "
        "(set mode: 0440 or narrower)",
    ),
    "secret-volume-projected": Case(
        request(
            {
                "volumes": [
                    {
                        "name": "bundle",
                        "projected": {
                            "defaultMode": 0o444,
                            "sources": [{"secret": {"name": "db"}}, {"configMap": {"name": "c"}}],
                        },
                    }
                ]
            }
        ),
        None,
        "secretVolumes: volume bundle: defaultMode 0444 is wider than 0440 (set defaultMode: 0440)",
    ),
    "secret-volume-writable": Case(
        request(
            {
                "volumes": [SECRET_VOLUME],
                "containers": [
                    container("app", volumeMounts=[{"name": "creds", "mountPath": "/creds"}])
                ],
            }
        ),
        None,
        "secretVolumes: container app mount creds: secret volume mounted writable "
        "(set readOnly: true)",
    ),
    "env-from-secret": Case(
        request({"containers": [container("app", envFrom=[{"secretRef": {"name": "db"}}])]}),
        None,
        "envFromSecrets: container app envFrom secret db: imports every key "
        "(use secretKeyRef for the keys you need)",
        DENY_ENV_FROM,
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_check_denies_each_rule_with_its_line(case: Case) -> None:
    violations = check(case.req, case.pod, case.policy, "mutate")
    assert [(v.line, v.action) for v in violations] == [(case.line, "deny")]


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_check_audit_mode_warns_with_the_same_line(case: Case) -> None:
    violations = check(case.req, case.pod, replace(case.policy, mode="audit"), "validate")
    assert [(v.line, v.action) for v in violations] == [(case.line, "warn")]


def _off(policy: Policy) -> Policy:
    return replace(
        policy,
        allowed_refs=AllowedRefsRule(action="off"),
        plaintext_secrets=PlaintextSecretsRule(action="off"),
        secret_volumes=SecretVolumesRule(action="off"),
        env_from_secrets=EnvFromSecretsRule(action="off"),
        unknown_annotations=UnknownAnnotationsRule(action="off"),
        delivery=replace(policy.delivery, action="off"),
    )


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_check_rule_off_reports_nothing(case: Case) -> None:
    assert check(case.req, case.pod, _off(case.policy), "mutate") == []


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_check_rule_warn_warns_in_enforce_mode(case: Case) -> None:
    policy = replace(
        case.policy,
        allowed_refs=replace(case.policy.allowed_refs, action="warn"),
        plaintext_secrets=replace(case.policy.plaintext_secrets, action="warn"),
        secret_volumes=replace(case.policy.secret_volumes, action="warn"),
        env_from_secrets=EnvFromSecretsRule(action="warn"),
        unknown_annotations=UnknownAnnotationsRule(action="warn"),
        delivery=replace(case.policy.delivery, action="warn"),
    )
    assert [v.action for v in check(case.req, case.pod, policy, "mutate")] == ["warn"]


def test_check_default_policy_warns_on_env_from_secrets() -> None:
    req = request({"containers": [container("app", envFrom=[{"secretRef": {"name": "db"}}])]})
    assert [(v.rule, v.action) for v in check(req, None, Policy(), "mutate")] == [
        ("envFromSecrets", "warn")
    ]


def test_check_clean_pod_has_no_violation() -> None:
    req = request(
        {
            "volumes": [SECRET_VOLUME, {"name": "cache", "emptyDir": {}}],
            "containers": [
                container(
                    "app",
                    env=[
                        *env(
                            LOG_LEVEL="info", DB_HOST="db.team-a.svc", DB_PASSWORD_FILE="/creds/pw"
                        ),
                        {
                            "name": "DB_PASSWORD",
                            "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}},
                        },
                    ],
                    envFrom=[{"configMapRef": {"name": "settings"}}],
                    volumeMounts=[READ_ONLY_MOUNT, {"name": "cache", "mountPath": "/cache"}],
                )
            ],
        }
    )
    pod = injections(
        file_db="vault:secret/data/team-a/db#password",
        env_API_KEY="aws-sm:team-a/api",
        file_cfg="aws-ssm:/team-a/app/config",
    )
    assert check(req, pod, Policy(), "mutate") == []


def test_check_reports_every_violation_in_rule_order() -> None:
    req = request(
        {
            "volumes": [{"name": "creds", "secret": {"secretName": "db"}}],
            "containers": [container("app", env=env(API_TOKEN="abc", SECRET_KEY="def"))],
        }
    )
    pod = PodInjection(
        injections(env_DB="vault:secret/data/team-b/db#password").injections,
        unknown_keys=(UnknownKey(PREFIX + "mount-pth", "mount-path"),),
    )
    assert [(v.rule, v.where) for v in check(req, pod, Policy(), "mutate")] == [
        ("unknownAnnotations", PREFIX + "mount-pth"),
        ("allowedRefs", PREFIX + "env.DB"),
        ("plaintextSecrets", "container app env API_TOKEN"),
        ("plaintextSecrets", "container app env SECRET_KEY"),
        ("secretVolumes", "volume creds"),
    ]


@pytest.mark.parametrize(
    ("grant_accounts", "account", "allowed"),
    [
        pytest.param(("billing",), "billing", True, id="named-account"),
        pytest.param(("billing",), "web", False, id="other-account"),
        pytest.param(("billing-*",), "billing-worker", True, id="account-glob"),
        pytest.param(("*",), "anything", True, id="any-account"),
    ],
)
def test_check_grants_by_service_account(
    grant_accounts: tuple[str, ...], account: str, allowed: bool
) -> None:
    policy = Policy(
        allowed_refs=AllowedRefsRule(
            grants=(
                RefGrant(
                    refs=("vault:secret/data/shared/stripe",), service_accounts=grant_accounts
                ),
            )
        )
    )
    req = request(service_account=account)
    violations = check(
        req, injections(env_KEY="vault:secret/data/shared/stripe#key"), policy, "mutate"
    )
    assert (violations == []) is allowed


def test_check_service_account_placeholder_scopes_to_the_pods_account() -> None:
    policy = Policy(
        allowed_refs=AllowedRefsRule(
            grants=(RefGrant(refs=("vault:secret/data/{namespace}/{serviceAccount}/*",)),)
        )
    )
    own = injections(file_db="vault:secret/data/team-a/web/db#password")
    other = injections(file_db="vault:secret/data/team-a/batch/db#password")
    assert check(request(service_account="web"), own, policy, "mutate") == []
    [violation] = check(request(service_account="web"), other, policy, "mutate")
    assert violation.fix == "use vault:secret/data/team-a/web/*"


@pytest.mark.parametrize(
    ("namespace", "kinds"),
    [
        pytest.param("dev", {"file", "env"}, id="dev-both"),
        pytest.param("prod-eu", {"file"}, id="prod-excluded-from-env"),
        pytest.param("sandbox", set(), id="sandbox-excluded-from-all"),
    ],
)
def test_check_delivery_grants_add_up_with_exclusions(namespace: str, kinds: set[str]) -> None:
    policy = Policy(
        delivery=DeliveryRule(
            grants=(
                DeliveryGrant(kinds=("file",), exclude_namespaces=("sandbox",)),
                DeliveryGrant(kinds=("env",), exclude_namespaces=("prod-*", "sandbox")),
            )
        ),
        allowed_refs=AllowedRefsRule(action="off"),
    )
    pod = injections(file_a="vault:secret/data/x/a#k", env_B="vault:secret/data/x/b#k")
    denied = {
        v.where.rsplit("/", 1)[1].split(".")[0]
        for v in check(request(namespace=namespace), pod, policy, "mutate")
    }
    assert {"file", "env"} - denied == kinds


def test_check_delivery_fix_when_nothing_is_granted() -> None:
    policy = Policy(delivery=DeliveryRule(grants=(DeliveryGrant(namespaces=("other",)),)))
    [violation] = check(
        request(), injections(file_db="vault:secret/data/team-a/db#k"), policy, "mutate"
    )
    assert violation.fix == "no delivery is granted here; ask the platform team"


def test_check_allowed_refs_fix_when_no_grant_covers_the_scheme() -> None:
    policy = Policy(
        allowed_refs=AllowedRefsRule(grants=(RefGrant(refs=("vault:secret/data/{namespace}/*",)),))
    )
    [violation] = check(request(), injections(file_db="aws-sm:team-a/db"), policy, "mutate")
    assert violation.fix == "no aws-sm reference is granted here; ask the platform team"


def test_check_allowed_refs_fix_counts_other_allowed_globs() -> None:
    policy = Policy(
        allowed_refs=AllowedRefsRule(
            grants=(RefGrant(refs=("aws-sm:{namespace}/*", "aws-sm:shared/*", "aws-sm:common/x")),)
        )
    )
    [violation] = check(request(), injections(file_db="aws-sm:team-b/db"), policy, "mutate")
    assert violation.fix == "use aws-sm:team-a/* or 2 more"


def test_check_ignores_plaintext_names_the_policy_exempts() -> None:
    policy = Policy(plaintext_secrets=PlaintextSecretsRule(ignore_names=("PUBLIC_*",)))
    req = request({"containers": [container("app", env=env(PUBLIC_TOKEN="pk_test_abc"))]})
    assert check(req, None, policy, "mutate") == []
    assert len(check(req, None, Policy(), "mutate")) == 1


def test_check_secret_volumes_respect_a_narrower_max_mode() -> None:
    policy = Policy(secret_volumes=SecretVolumesRule(max_mode=0o400))
    req = request({"volumes": [SECRET_VOLUME]})
    [violation] = check(req, None, policy, "mutate")
    assert violation.line == (
        "secretVolumes: volume creds: defaultMode 0440 is wider than 0400 (set defaultMode: 0400)"
    )


def test_check_tolerates_odd_pod_fields() -> None:
    """Fields the API server would reject anyway must not crash the policy."""
    req = request(
        {
            "volumes": [
                {"name": "a", "secret": "nope"},
                {"name": "b", "projected": {"sources": 3}},
            ],
            "containers": [
                container(
                    "app",
                    env=[{"name": 5, "value": "x"}, {"name": "TOKEN", "value": 7}, {"value": "y"}],
                )
            ],
        }
    )
    assert check(req, None, Policy(), "mutate") == []
