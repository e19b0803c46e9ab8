"""The annotation language: opt-in, keys, the reference grammar and its precise errors."""

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import PREFIX
from webhook import annotations
from webhook.errors import AnnotationError, PolicyError
from webhook.refs import (
    AwsParameterRef,
    AwsSecretRef,
    Injection,
    PodInjection,
    SecretRef,
    UnknownKey,
    VaultRef,
)
from webhook.settings import AwsProvider, Providers, Settings

SETTINGS = Settings()
ON = {PREFIX + "inject": "true"}
DB = PREFIX + "file.db"
ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf"


def opted(**keys: str) -> dict[str, str]:
    """Opted-in annotations; keyword names use _ for . and __ for - (file_db, vault__role)."""
    return ON | {PREFIX + k.replace("__", "-").replace("_", "."): v for k, v in keys.items()}


def errors_of(values: dict[str, str], config: Settings = SETTINGS) -> list[str]:
    with pytest.raises(AnnotationError) as caught:
        annotations.parse(values, config)
    return list(caught.value.lines)


def ref_errors(reference: str) -> list[str]:
    """The lines for one reference, without the `annotation <key>: ` lead."""
    lead = f"annotation {DB}: "
    lines = errors_of(ON | {DB: reference})
    assert all(line.startswith(lead) for line in lines), lines
    return [line[len(lead) :] for line in lines]


# -- opting in -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({}, id="no-annotations"),
        pytest.param({"app": "web", "other.io/inject": "true"}, id="other-keys-only"),
        pytest.param({DB: "vault:secret/data/app/db#password"}, id="refs-without-inject"),
        pytest.param({PREFIX + "inject": "false", DB: "gcp:broken"}, id="inject-false"),
        pytest.param({"secret-injector.io.evil/inject": "true"}, id="prefix-lookalike"),
    ],
)
def test_parse_not_opted_in_returns_none(values: dict[str, str]) -> None:
    assert annotations.parse(values, SETTINGS) is None


def test_parse_reads_every_key() -> None:
    values = opted(
        file_db="vault:secret/data/app/db#password",
        env_API__KEY="aws-sm:prod/app/api#key",
        vault__role="shop-api",
        aws__region="eu-west-1",
        containers=" app , worker,app",
        mount__path="/var/run/secrets/app",
        status="injected",
    )
    assert annotations.parse(values, SETTINGS) == PodInjection(
        injections=(
            Injection(
                PREFIX + "env.API-KEY", "env", "API-KEY", AwsSecretRef("prod/app/api", "key")
            ),
            Injection(DB, "file", "db", VaultRef("secret/data/app/db", "password")),
        ),
        vault_role="shop-api",
        aws_region="eu-west-1",
        containers=("app", "worker"),
        mount_path="/var/run/secrets/app",
    )


def test_parse_uses_the_configured_prefix_and_mount_path() -> None:
    config = Settings(annotation_prefix="secrets.example.com", default_mount_path="/secrets")
    values = {
        "secrets.example.com/inject": "true",
        "secrets.example.com/env.TOKEN": "aws-ssm:/app/token",
        PREFIX + "inject": "maybe",  # another prefix: not ours, not an error
    }
    assert annotations.parse(values, config) == PodInjection(
        injections=(
            Injection(
                "secrets.example.com/env.TOKEN", "env", "TOKEN", AwsParameterRef("/app/token")
            ),
        ),
        mount_path="/secrets",
    )


# -- the reference grammar ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        pytest.param(
            "vault:secret/data/prod/db#password",
            VaultRef("secret/data/prod/db", "password"),
            id="vault",
        ),
        pytest.param(
            "vault:kv/team-a/data/svc/db#pass.word?version=12",
            VaultRef("kv/team-a/data/svc/db", "pass.word", 12),
            id="vault-version",
        ),
        pytest.param(
            "vault:database/creds/readonly#username",
            VaultRef("database/creds/readonly", "username"),
            id="vault-non-kv",
        ),
        pytest.param("aws-sm:prod/myapp/database", AwsSecretRef("prod/myapp/database"), id="sm"),
        pytest.param(
            "aws-sm:prod/myapp/database#password",
            AwsSecretRef("prod/myapp/database", "password"),
            id="sm-json-key",
        ),
        pytest.param(
            "aws-sm:prod/db#user-name?version-stage=AWSPREVIOUS",
            AwsSecretRef("prod/db", "user-name", version_stage="AWSPREVIOUS"),
            id="sm-stage",
        ),
        pytest.param(
            "aws-sm:prod/db?version-id=EXAMPLE1-90ab-cdef-fedc-ba987EXAMPLE",
            AwsSecretRef("prod/db", version_id="EXAMPLE1-90ab-cdef-fedc-ba987EXAMPLE"),
            id="sm-version-id",
        ),
        pytest.param(f"aws-sm:{ARN}", AwsSecretRef(ARN), id="sm-arn"),
        pytest.param(
            "aws-ssm:/prod/myapp/api-key", AwsParameterRef("/prod/myapp/api-key"), id="ssm"
        ),
        pytest.param("aws-ssm:flat_name.v2", AwsParameterRef("flat_name.v2"), id="ssm-flat"),
    ],
)
def test_parse_reference_reads_the_grammar(reference: str, expected: SecretRef) -> None:
    assert annotations.parse_reference(reference) == expected
    assert str(expected) == reference  # refs print back as written (audit lines use this)


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        # Not a reference at all: the value is never shown, it may be a pasted secret.
        pytest.param(
            "",
            "the reference is empty (write a reference such as vault:secret/data/app/db#password)",
            id="empty",
        ),
        pytest.param(
            "hunter2-correct-horse",
            "the value is not a reference: it must start with vault:, aws-sm: or aws-ssm: "
            "(value not shown)",
            id="no-scheme",
        ),
        pytest.param(
            "p@ss:w0rd!",
            "the value is not a reference: it must start with vault:, aws-sm: or aws-ssm: "
            "(value not shown)",
            id="colon-in-a-password",
        ),
        pytest.param(
            "v" * 100_000,
            "the reference is 100000 characters, the limit is 2048",
            id="100kb",
        ),
        pytest.param(
            "vault:secret/data/db#pass word",
            "the reference contains a space at character 26 (references have no spaces or "
            "invisible characters)",
            id="space",
        ),
        pytest.param(
            "vault:secret/data/db#password\n",
            "the reference contains U+000A (a control character) at character 30 (references "
            "have no spaces or invisible characters)",
            id="trailing-newline",
        ),
        pytest.param(
            "vault:secret/da\x00ta/db#k",
            "the reference contains U+0000 (a control character) at character 16 (references "
            "have no spaces or invisible characters)",
            id="nul",
        ),
        pytest.param(
            "vault:secret/data/db#\u200bkey",
            "the reference contains U+200B (an invisible character) at character 22 "
            "(references have no spaces or invisible characters)",
            id="zero-width-space",
        ),
        pytest.param(
            "vault:secret/data/db#\u00a0key",
            "the reference contains U+00A0 (whitespace) at character 22 (references have no "
            "spaces or invisible characters)",
            id="no-break-space",
        ),
        # Schemes.
        pytest.param(
            "valut:secret/data/db#k",
            'unknown scheme "valut:", did you mean "vault:"? (references start with vault:, '
            "aws-sm: or aws-ssm:)",
            id="scheme-typo",
        ),
        pytest.param(
            "Vault:secret/data/db#k",
            'unknown scheme "Vault:", did you mean "vault:"? (references start with vault:, '
            "aws-sm: or aws-ssm:)",
            id="scheme-case",
        ),
        pytest.param(
            "ssm:/prod/key",
            'unknown scheme "ssm:", did you mean "aws-ssm:"? (references start with vault:, '
            "aws-sm: or aws-ssm:)",
            id="scheme-ssm",
        ),
        pytest.param(
            "openbao:secret/data/db#k",
            'unknown scheme "openbao:", did you mean "vault:"? (references start with vault:, '
            "aws-sm: or aws-ssm:)",
            id="scheme-openbao",
        ),
        pytest.param(
            "aws:prod/db",
            'unknown scheme "aws:", did you mean "aws-sm:" (Secrets Manager) or "aws-ssm:" '
            "(Parameter Store)? (references start with vault:, aws-sm: or aws-ssm:)",
            id="scheme-aws",
        ),
        pytest.param(
            ARN,
            'unknown scheme "arn:", did you mean "aws-sm:arn:..."? (references start with '
            "vault:, aws-sm: or aws-ssm:)",
            id="bare-sm-arn",
        ),
        pytest.param(
            "arn:aws:ssm:us-east-1:123456789012:parameter/prod/key",
            'unknown scheme "arn:"; for SSM write "aws-ssm:<parameter-name>" (references start '
            "with vault:, aws-sm: or aws-ssm:)",
            id="bare-ssm-arn",
        ),
        pytest.param(
            "gcp:projects/p/secrets/s",
            "unknown scheme (references start with vault:, aws-sm: or aws-ssm:; value not shown)",
            id="scheme-unknown",
        ),
        # vault:
        pytest.param(
            "vault:secret/data/db",
            "a vault reference needs #<key> after the path (write vault:<path>#<key>, e.g. "
            "vault:secret/data/app/db#password)",
            id="vault-no-key",
        ),
        pytest.param(
            "vault:secret/data/db#",
            "the key after '#' is empty (write vault:<path>#<key>)",
            id="vault-empty-key",
        ),
        pytest.param(
            "vault:#password",
            "the path is empty (write vault:<path>#<key>, e.g. vault:secret/data/app/db#password)",
            id="vault-empty-path",
        ),
        pytest.param(
            "vault:/secret/data/db#k",
            "the path must not start with '/' (write the API path without it, e.g. "
            "vault:secret/data/app/db#password)",
            id="vault-leading-slash",
        ),
        pytest.param(
            "vault://secret/data/db#k",
            "the path starts with '//': write vault:<path>#<key>, not vault://...",
            id="vault-url",
        ),
        pytest.param(
            "vault:v1/secret/data/db#k",
            "the path must not start with v1/ (write the API path after /v1/)",
            id="vault-v1",
        ),
        pytest.param(
            "vault:secret/data/db/#k",
            "the path must not end with '/' (name a secret, not a folder)",
            id="vault-trailing-slash",
        ),
        pytest.param(
            "vault:secret//data/db#k",
            "the path has an empty segment ('//')",
            id="vault-empty-segment",
        ),
        pytest.param(
            "vault:secret/data/../other#k",
            "the path must not contain '.' or '..' segments",
            id="vault-dotdot",
        ),
        pytest.param(
            "vault:secret/data/d%62#k",
            "the path contains '%'; use letters, digits and . _ - @ + = , ~ between the slashes",
            id="vault-bad-char",
        ),
        pytest.param(
            "vault:secret/data/d\u00e9j\u00e0#k",
            "the path contains '\u00e9' (U+00E9); use letters, digits and . _ - @ + = , ~ "
            "between the slashes",
            id="vault-unicode",
        ),
        pytest.param(
            "vault:secret/data/db#a#b", "the reference has more than one '#'", id="vault-two-keys"
        ),
        pytest.param(
            "vault:secret/data/db?version=2#password",
            "the #<key> goes before the query (write vault:<path>#<key>?<query>)",
            id="vault-query-before-key",
        ),
        pytest.param(
            "vault:secret/data/db#k?version=0",
            'version must be a whole number from 1, got "0"',
            id="vault-version-zero",
        ),
        pytest.param(
            "vault:secret/data/db#k?version=latest",
            'version must be a whole number from 1, got "latest"',
            id="vault-version-word",
        ),
        pytest.param(
            "vault:secret/data/db#k?version=-1",
            'version must be a whole number from 1, got "-1"',
            id="vault-version-negative",
        ),
        pytest.param(
            "vault:secret/data/db#k?version=\u0663",
            'version must be a whole number from 1, got "\u0663"',
            id="vault-version-arabic-digit",
        ),
        pytest.param(
            "vault:secret/data/db#k?version=99999999999",
            'version "99999999999" is too large',
            id="vault-version-huge",
        ),
        pytest.param(
            "vault:secret/prod/db#k?version=3",
            "?version= pins a KV v2 version, but the path has no data/ segment (KV v2 paths "
            "look like secret/data/app/db)",
            id="vault-version-kv1",
        ),
        pytest.param(
            "vault:secret/data/db#k?versoin=3",
            'unknown query parameter "versoin", did you mean "version"? (vault references '
            "accept ?version=)",
            id="vault-query-typo",
        ),
        pytest.param(
            "vault:secret/data/db#k?",
            "the query after '?' is empty (vault references accept ?version=)",
            id="vault-empty-query",
        ),
        pytest.param(
            "vault:secret/data/db#k?version",
            "query parameter version has no value (write ?version=<value>)",
            id="vault-query-no-value",
        ),
        pytest.param(
            "vault:secret/data/db#k?version=1&version=2",
            "query parameter version is given more than once",
            id="vault-query-twice",
        ),
        pytest.param(
            "vault:secret/data/db#k?version=1&",
            "the query has an empty parameter (vault references accept ?version=)",
            id="vault-query-stray-ampersand",
        ),
        # aws-sm:
        pytest.param(
            "aws-sm:",
            "the secret name is empty (write aws-sm:<name-or-arn>, e.g. "
            "aws-sm:prod/app/db#password)",
            id="sm-empty",
        ),
        pytest.param(
            "aws-sm:prod/my*app",
            "the secret name contains '*'; Secrets Manager names have letters, digits and "
            "/ _ + = . @ -",
            id="sm-bad-char",
        ),
        pytest.param(
            "aws-sm:" + "a" * 513,
            "the secret name is 513 characters, the limit is 512",
            id="sm-long-name",
        ),
        pytest.param(
            "aws-sm:arn:aws:secretsmanager:us-east-1:1234:secret:db",
            "the ARN is not a Secrets Manager secret ARN "
            "(arn:aws:secretsmanager:<region>:<account-id>:secret:<name>)",
            id="sm-bad-arn",
        ),
        pytest.param(
            "aws-sm:arn:aws:ssm:us-east-1:123456789012:parameter/db",
            "this is an SSM parameter ARN: write aws-ssm:<parameter-name>",
            id="sm-ssm-arn",
        ),
        pytest.param(
            "aws-sm:prod/db#",
            "the JSON key after '#' is empty (write aws-sm:<name>#<json-key>)",
            id="sm-empty-key",
        ),
        pytest.param(
            "aws-sm:prod/db?version-stage=AWSCURRENT&version-id=" + "a" * 32,
            "set either ?version-stage= or ?version-id=, not both",
            id="sm-stage-and-id",
        ),
        pytest.param(
            "aws-sm:prod/db?version-stage=a,b",
            'version-stage "a,b" is not a stage label such as AWSPREVIOUS (letters, digits and '
            "_ + = . @ -, at most 256)",
            id="sm-bad-stage",
        ),
        pytest.param(
            "aws-sm:prod/db?version-id=v3",
            'version-id "v3" is not a Secrets Manager version id (32 to 64 letters, digits and '
            "'-')",
            id="sm-bad-version-id",
        ),
        pytest.param(
            "aws-sm:prod/db?version=3",
            'unknown query parameter "version", did you mean "version-id"? (aws-sm references '
            "accept ?version-stage= or ?version-id=)",
            id="sm-vault-style-version",
        ),
        # aws-ssm:
        pytest.param(
            "aws-ssm:",
            "the parameter name is empty (write aws-ssm:<name>, e.g. aws-ssm:/prod/app/api-key)",
            id="ssm-empty",
        ),
        pytest.param(
            "aws-ssm:/prod/db#password",
            "aws-ssm references take no #<key> (an SSM parameter has one value)",
            id="ssm-key",
        ),
        pytest.param(
            "aws-ssm:/prod/db?version=2",
            "aws-ssm references take no query (?...) parameters",
            id="ssm-query",
        ),
        pytest.param(
            "aws-ssm:arn:aws:ssm:us-east-1:123456789012:parameter/prod/db",
            "write the parameter's name, not its ARN (aws-ssm:/prod/app/key)",
            id="ssm-arn",
        ),
        pytest.param(
            "aws-ssm:/prod/db:3",
            "the parameter name contains ':'; SSM names have letters, digits and _ . - / "
            "(version selectors such as name:3 are not supported)",
            id="ssm-selector",
        ),
        pytest.param(
            "aws-ssm:prod/db",
            "a parameter name with '/' must start with '/' (e.g. aws-ssm:/prod/app/key)",
            id="ssm-relative",
        ),
        pytest.param(
            "aws-ssm:/prod//db",
            "the parameter name has an empty '/' segment",
            id="ssm-empty-segment",
        ),
        pytest.param(
            "aws-ssm:" + "/a" * 16,
            "the parameter name has more than 15 levels",
            id="ssm-too-deep",
        ),
        pytest.param(
            "aws-ssm:/" + "a" * 1011,
            "the parameter name is 1012 characters, the limit is 1011",
            id="ssm-too-long",
        ),
    ],
)
def test_parse_reference_error_says_what_is_wrong(reference: str, expected: str) -> None:
    assert ref_errors(reference) == [expected]


def test_parse_reference_reports_every_problem_of_one_reference() -> None:
    assert ref_errors("vault:/secret/data/db#k?version=x&colour=red") == [
        'unknown query parameter "colour" (vault references accept ?version=)',
        "the path must not start with '/' (write the API path without it, e.g. "
        "vault:secret/data/app/db#password)",
        'version must be a whole number from 1, got "x"',
    ]


@pytest.mark.parametrize(
    "secret",
    [
        "hunter2-correct-horse",
        "postgres://admin:S3cr3t!@db:5432/app",
        "AKIAIOSFODNN7EXAMPLE",
        "S3cr3tPassw0rd:tail",
        "admin:S3cr3t",
        "-----BEGIN PRIVATE KEY-----\nS3cr3t\n-----END PRIVATE KEY-----",
    ],
)
def test_parse_never_echoes_a_value_that_is_not_a_reference(secret: str) -> None:
    message = "\n".join(errors_of(ON | {PREFIX + "env.DB_PASSWORD": secret}))
    assert "S3cr3t" not in message
    assert "hunter2" not in message
    assert "AKIA" not in message


# -- keys --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param(
            {PREFIX + "inject": "yes", DB: "vault:secret/data/db#k"},
            ['annotation secret-injector.io/inject: must be "true" or "false", got "yes"'],
            id="inject-yes",
        ),
        pytest.param(
            {PREFIX + "inject": "True", DB: "vault:secret/data/db#k"},
            ['annotation secret-injector.io/inject: must be "true" or "false", got "True"'],
            id="inject-capitalised",
        ),
        pytest.param(
            ON,
            [
                "annotation secret-injector.io/inject: pod is opted in but has no "
                "secret-injector.io/file.<filename> or secret-injector.io/env.<NAME> annotation "
                "(add one, or remove secret-injector.io/inject)"
            ],
            id="opted-in-without-refs",
        ),
        pytest.param(
            opted(file_="vault:secret/data/db#k"),
            [
                "annotation secret-injector.io/file.: the file name after file. is empty "
                "(write file.<filename>)"
            ],
            id="file-empty-name",
        ),
        pytest.param(
            {**ON, PREFIX + "file.etc/passwd": "vault:secret/data/db#k"},
            [
                'annotation secret-injector.io/file.etc/passwd: file name "etc/passwd" '
                "contains '/' (a file name, not a path)"
            ],
            id="file-slash",
        ),
        pytest.param(
            {**ON, PREFIX + "file..": "vault:secret/data/db#k"},
            ['annotation secret-injector.io/file..: file name "." is not a file name'],
            id="file-dot",
        ),
        pytest.param(
            {**ON, PREFIX + "file...": "vault:secret/data/db#k"},
            ['annotation secret-injector.io/file...: file name ".." is not a file name'],
            id="file-dotdot",
        ),
        pytest.param(
            {**ON, PREFIX + "file...data": "vault:secret/data/db#k"},
            [
                'annotation secret-injector.io/file...data: file name "..data" starts with '
                "'..', reserved by the CSI driver"
            ],
            id="file-atomic-writer-name",
        ),
        pytest.param(
            {**ON, PREFIX + "file..secret-injector.env.X": "vault:secret/data/db#k"},
            [
                "annotation secret-injector.io/file..secret-injector.env.X: file names starting "
                "with .secret-injector are reserved for secret-injector"
            ],
            id="file-reserved",
        ),
        pytest.param(
            {**ON, PREFIX + "file.my db": "vault:secret/data/db#k"},
            [
                'annotation "secret-injector.io/file.my db": file name contains a space; use '
                "letters, digits, '.', '-' and '_'"
            ],
            id="file-space",
        ),
        pytest.param(
            {**ON, PREFIX + "file.d\x07b": "vault:secret/data/db#k"},
            [
                'annotation "secret-injector.io/file.d\\x07b": file name contains U+0007 (a '
                "control character); use letters, digits, '.', '-' and '_'"
            ],
            id="file-control-char",
        ),
        pytest.param(
            {**ON, PREFIX + "file." + "f" * 60: "vault:secret/data/db#k"},
            [
                f"annotation secret-injector.io/file.{'f' * 60}: the key's name part is 65 "
                "characters, Kubernetes allows 63 (use a shorter file or variable name)"
            ],
            id="key-too-long",
        ),
        pytest.param(
            opted(env_="vault:secret/data/db#k"),
            [
                "annotation secret-injector.io/env.: the variable name after env. is empty "
                "(write env.<NAME>)"
            ],
            id="env-empty-name",
        ),
        pytest.param(
            {**ON, PREFIX + "env.1PASSWORD": "vault:secret/data/db#k"},
            [
                'annotation secret-injector.io/env.1PASSWORD: variable name "1PASSWORD" must '
                "not start with a digit"
            ],
            id="env-leading-digit",
        ),
        pytest.param(
            {**ON, PREFIX + "env.DB:PASS": "vault:secret/data/db#k"},
            [
                "annotation secret-injector.io/env.DB:PASS: variable name contains ':'; use "
                "letters, digits, '_', '-' and '.'"
            ],
            id="env-bad-char",
        ),
        pytest.param(
            {**ON, PREFIX + "env...X": "vault:secret/data/db#k"},
            [
                'annotation secret-injector.io/env...X: variable name "..X" cannot be a Secret '
                "key ('.' and '..' are reserved)"
            ],
            id="env-dotdot",
        ),
        pytest.param(
            opted(vault__role="", file_db="vault:secret/data/db#k"),
            [
                "annotation secret-injector.io/vault-role: is empty (name the Vault role, or "
                "remove the annotation)"
            ],
            id="role-empty",
        ),
        pytest.param(
            opted(vault__role="shop/admin", file_db="vault:secret/data/db#k"),
            [
                "annotation secret-injector.io/vault-role: contains '/'; a Vault role name has "
                "letters, digits and . _ - @"
            ],
            id="role-slash",
        ),
        pytest.param(
            opted(vault__role="r" * 300, file_db="vault:secret/data/db#k"),
            ["annotation secret-injector.io/vault-role: is 300 characters, the limit is 256"],
            id="role-long",
        ),
        pytest.param(
            opted(aws__region="us-east1", file_db="aws-ssm:/db"),
            [
                'annotation secret-injector.io/aws-region: "us-east1" is not an AWS region name '
                "such as us-east-1"
            ],
            id="region-typo",
        ),
        pytest.param(
            opted(aws__region="https://169.254.169.254/", file_db="aws-ssm:/db"),
            [
                'annotation secret-injector.io/aws-region: "https://169.254.169.254/" is not an '
                "AWS region name such as us-east-1"
            ],
            id="region-url",
        ),
        pytest.param(
            opted(containers="", file_db="aws-ssm:/db"),
            [
                "annotation secret-injector.io/containers: is empty (list container names, "
                "e.g. app,worker)"
            ],
            id="containers-empty",
        ),
        pytest.param(
            opted(containers="app,,worker", file_db="aws-ssm:/db"),
            [
                "annotation secret-injector.io/containers: has an empty container name (check "
                "for a stray comma)"
            ],
            id="containers-stray-comma",
        ),
        pytest.param(
            opted(containers="app,Worker_1", file_db="aws-ssm:/db"),
            [
                'annotation secret-injector.io/containers: "Worker_1" is not a container name '
                "(lowercase letters, digits and '-', at most 63)"
            ],
            id="containers-invalid-name",
        ),
        pytest.param(
            opted(mount__path="", file_db="aws-ssm:/db"),
            [
                "annotation secret-injector.io/mount-path: is empty (write an absolute path "
                "such as /mnt/secrets)"
            ],
            id="mount-path-empty",
        ),
        pytest.param(
            opted(mount__path="mnt/secrets", file_db="aws-ssm:/db"),
            [
                'annotation secret-injector.io/mount-path: "mnt/secrets" is not an absolute '
                "path (start it with /)"
            ],
            id="mount-path-relative",
        ),
        pytest.param(
            opted(mount__path="/", file_db="aws-ssm:/db"),
            [
                "annotation secret-injector.io/mount-path: must not be / (choose a directory "
                "such as /mnt/secrets)"
            ],
            id="mount-path-root",
        ),
        pytest.param(
            opted(mount__path="/mnt/../etc", file_db="aws-ssm:/db"),
            ["annotation secret-injector.io/mount-path: \"/mnt/../etc\" must not contain '..'"],
            id="mount-path-dotdot",
        ),
        pytest.param(
            opted(mount__path="/mnt//secrets/", file_db="aws-ssm:/db"),
            [
                'annotation secret-injector.io/mount-path: "/mnt//secrets/" is not normalized '
                '(write "/mnt/secrets")'
            ],
            id="mount-path-not-normal",
        ),
        pytest.param(
            opted(mount__path="//mnt/secrets", file_db="aws-ssm:/db"),
            [
                'annotation secret-injector.io/mount-path: "//mnt/secrets" is not normalized '
                '(write "/mnt/secrets")'
            ],
            id="mount-path-double-leading-slash",
        ),
        pytest.param(
            opted(mount__path="/mnt/my secrets", file_db="aws-ssm:/db"),
            ["annotation secret-injector.io/mount-path: contains a space at character 8"],
            id="mount-path-space",
        ),
        pytest.param(
            opted(status="pending", file_db="aws-ssm:/db"),
            [
                'annotation secret-injector.io/status: is set by the webhook, got "pending" '
                "(remove this annotation)"
            ],
            id="status-forged",
        ),
        pytest.param(
            opted(file_a="aws-ssm:/prod/flag", file_b="aws-ssm:/prod/flag"),
            [
                "annotation secret-injector.io/file.b: secret-injector.io/file.a already "
                "delivers aws-ssm:/prod/flag as a file, and the AWS provider writes an SSM "
                "parameter to one file only (keep one of the two annotations)"
            ],
            id="ssm-parameter-in-two-files",
        ),
        pytest.param(
            opted(aws__region="eu-west-1", file_db="aws-sm:" + ARN),
            [
                "annotation secret-injector.io/file.db: the ARN is in region us-east-1 but the "
                "pod mounts AWS secrets from eu-west-1 (secret-injector.io/aws-region); set "
                "secret-injector.io/aws-region: us-east-1 or name the secret instead"
            ],
            id="arn-region-vs-annotation",
        ),
        pytest.param(
            opted(
                file_a="aws-sm:" + ARN, file_b="aws-sm:" + ARN.replace("us-east-1", "ap-south-1")
            ),
            [
                "annotation secret-injector.io/file.b: the ARN is in region ap-south-1 but "
                "secret-injector.io/file.a names one in us-east-1; a pod mounts AWS secrets "
                "from one region (set secret-injector.io/aws-region)"
            ],
            id="arns-in-two-regions",
        ),
    ],
)
def test_parse_key_error_names_the_annotation(values: dict[str, str], expected: list[str]) -> None:
    assert errors_of(values) == expected


def test_parse_checks_arn_region_against_config() -> None:
    config = Settings(providers=Providers(aws=AwsProvider(region="eu-central-1")))
    assert errors_of(opted(file_db="aws-sm:" + ARN), config) == [
        "annotation secret-injector.io/file.db: the ARN is in region us-east-1 but the pod "
        "mounts AWS secrets from eu-central-1 (the configured region); set "
        "secret-injector.io/aws-region: us-east-1 or name the secret instead"
    ]


def test_parse_collects_every_problem_in_one_error() -> None:
    lines = errors_of(
        {
            PREFIX + "inject": "ture",
            PREFIX + "file.db": "valut:secret/data/db#k",
            PREFIX + "env.TOKEN": "aws-ssm:token#x",
            PREFIX + "mount-path": "relative",
        }
    )
    assert [line.split(":")[0] for line in lines] == [
        "annotation secret-injector.io/inject",
        "annotation secret-injector.io/env.TOKEN",
        "annotation secret-injector.io/file.db",
        "annotation secret-injector.io/mount-path",
    ]


# -- unknown keys --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        pytest.param("flie.db", "file.db", id="flie"),
        pytest.param("files.db", "file.db", id="files"),
        pytest.param("File.db", "file.db", id="capital-file"),
        pytest.param("evn.DB_PASSWORD", "env.DB_PASSWORD", id="evn"),
        pytest.param("file-db", "file.db", id="dash-for-dot"),
        pytest.param("env_TOKEN", "env.TOKEN", id="underscore-for-dot"),
        pytest.param("file", "file.<filename>", id="bare-file"),
        pytest.param("vault-rol", "vault-role", id="vault-rol"),
        pytest.param("vault_role", "vault-role", id="vault-underscore"),
        pytest.param("role", None, id="too-far"),
        pytest.param("region", "aws-region", id="region"),
        pytest.param("mountPath", "mount-path", id="camel-case"),
        pytest.param("container", "containers", id="singular"),
        pytest.param("Inject", "inject", id="capital-inject"),
        pytest.param("injected", "inject", id="injected"),
        pytest.param("agent-inject-secret-db", None, id="other-tool"),
        pytest.param("x" * 60, None, id="long"),
    ],
)
def test_parse_unknown_key_gets_a_suggestion(name: str, suggestion: str | None) -> None:
    values = opted(file_ok="vault:secret/data/db#k") | {PREFIX + name: "x"}
    pod = annotations.parse(values, SETTINGS)
    assert pod is not None
    assert pod.unknown_keys == (UnknownKey(PREFIX + name, suggestion),)


def test_suggest_key_survives_huge_and_odd_keys() -> None:
    assert annotations.suggest_key("f" * 100_000) is None
    assert annotations.suggest_key("\x00\u200b\ud7ff") is None


# -- the validating guard --------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({}, id="not-opted-in"),
        pytest.param({PREFIX + "inject": "false"}, id="opted-out"),
        pytest.param(ON | {PREFIX + "status": "injected"}, id="injected"),
    ],
)
def test_check_injected_allows(values: dict[str, str]) -> None:
    annotations.check_injected(values, SETTINGS)


@pytest.mark.parametrize(
    "values",
    [
        pytest.param(ON, id="no-marker"),
        pytest.param(ON | {PREFIX + "status": "pending"}, id="other-marker"),
    ],
)
def test_check_injected_denies_an_opted_in_pod_without_the_marker(values: dict[str, str]) -> None:
    with pytest.raises(PolicyError) as caught:
        annotations.check_injected(values, SETTINGS)
    assert caught.value.lines == (
        "injection: annotation secret-injector.io/status: pod is opted in but was not injected "
        "(check that the secret-injector mutating webhook is running and reachable, and that "
        "its namespaceSelector and matchConditions cover this pod)",
    )


# -- robustness ------------------------------------------------------------------------------

_NAMES = st.sampled_from(
    [
        "inject",
        "file.db",
        "env.DB",
        "vault-role",
        "aws-region",
        "containers",
        "mount-path",
        "status",
    ]
) | st.text(max_size=70)
_VALUES = st.one_of(
    st.text(max_size=300),
    st.sampled_from(["vault:", "aws-sm:", "aws-ssm:", "true"]).flatmap(
        lambda head: st.text(max_size=200).map(lambda tail: head + tail)
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_NAMES, _VALUES, max_size=6))
def test_parse_never_crashes_on_any_string(extra: dict[str, str]) -> None:
    values = ON | {PREFIX + name: value for name, value in extra.items()}
    try:
        annotations.parse(values, SETTINGS)
    except AnnotationError as error:
        assert error.lines
        assert all(line.startswith("annotation ") and "\n" not in line for line in error.lines)


_MESSAGE_TEXT = Path(annotations.__file__).read_text(encoding="utf-8") + PREFIX + "env.X"


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=8, max_size=120))
def test_parse_never_echoes_an_unknown_value(value: str) -> None:
    scheme, colon, tail = value.partition(":")
    if colon and scheme in annotations.SCHEMES:
        return
    try:
        annotations.parse(ON | {PREFIX + "env.X": value}, SETTINGS)
    except AnnotationError as error:
        shown = error.message
        secret = tail if colon else value
        # A value that is itself a piece of our own message text (the key, a phrase of a
        # template in annotations.py) cannot be told apart from an echo: not a leak.
        if len(secret) >= 8 and secret not in _MESSAGE_TEXT:
            assert secret not in shown
            assert annotations.show(secret)[1:-1] not in shown
