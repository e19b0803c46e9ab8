"""plaintextSecrets: no false positive on ordinary env vars; every known format caught; no echo."""

from __future__ import annotations

import pytest

from tests.policy.pods import container, request
from webhook import plaintext
from webhook.policy import Policy, check

# Ordinary env vars of real workloads: none of them holds a secret.
ORDINARY = {
    "LOG_LEVEL": "info",
    "RUST_LOG": "warn,app=debug",
    "NODE_ENV": "production",
    "FEATURE_NEW_CHECKOUT": "true",
    "ENABLE_TOKEN_AUTH": "false",
    "REPLICAS": "3",
    "PORT": "8080",
    "TIMEOUT_SECONDS": "2.5",
    "GOMAXPROCS": "2",
    "JAVA_OPTS": "-Xmx512m -XX:+UseG1GC -Dfile.encoding=UTF-8",
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/home/app",
    "PWD": "/app",
    "CONFIG_DIR": "/etc/app/conf.d",
    "DB_HOST": "postgres.team-a.svc.cluster.local",
    "DB_USER": "app",
    "DB_NAME": "orders",
    "DATABASE_URL": "postgres://app@postgres.team-a.svc:5432/orders?sslmode=require",
    "REDIS_URL": "redis://redis-master.cache.svc:6379/0",
    "DSN_TEMPLATE": "postgres://app:$(DB_PASSWORD)@db:5432/app",
    "AMQP_URL": "amqp://rabbitmq:5672/%2F",
    "API_BASE_URL": "https://api.example.com/v1/",
    "OIDC_ISSUER": "https://login.example.com/realms/main",
    "PROXY": "http://proxy.corp:3128",
    "NO_PROXY": "localhost,127.0.0.1,.svc,.cluster.local",
    "GIT_REPO": "git@github.com:example/app.git",
    "EMAIL_FROM": "noreply@example.com",
    "REQUEST_ID": "3f2b8c1e-9a4d-4b7e-8f0a-1c2d3e4f5a6b",
    "IMAGE": "registry.example.com/app@sha256:"
    "4c2b7a1e9f0d8c3b6a5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0f9e",
    "BUILD_SHA": "9fceb02d0ae598e95dc970b74767f19372d61af8",
    "CA_BUNDLE_B64": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJrVENDQVRl",
    "TLS_CERT": "-----BEGIN CERTIFICATE-----\nMIIBkTCCATe\n-----END CERTIFICATE-----",
    "PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0C\n-----END PUBLIC KEY-----",
    "TZ": "Europe/Paris",
    "LANG": "en_US.UTF-8",
    "POD_IP": "10.42.0.17",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability:4317",
    "POSTGRES_PASSWORD_FILE": "/run/secrets/postgres-password",
    "VAULT_TOKEN_PATH": "/var/run/secrets/vault/token",
    "TOKEN_URL": "https://login.example.com/oauth/token",
    "OAUTH_TOKEN_ENDPOINT": "https://login.example.com/oauth2/v2.0/token",
    "SECRET_NAME": "orders-db",
    "SECRETS_MOUNT_PATH": "/mnt/secrets",
    "PASSWORD_MIN_LENGTH": "12",
    "TOKEN_TTL": "15m",
    "JWT_ISSUER": "https://auth.example.com",
    "JWT_AUDIENCE": "orders",
    "API_KEY_HEADER": "X-Api-Key",
    "SESSION_KEY_PREFIX": "sess:",
    "TOKENIZERS_PARALLELISM": "false",
    "KEYCLOAK_REALM": "main",
    "AWS_REGION": "eu-west-1",
    "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/orders",
    "SECRET_ARN": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:orders/db-AbCdEf",
    "KAFKA_BROKERS": "kafka-0.kafka:9092,kafka-1.kafka:9092",
    "S3_BUCKET": "orders-archive-eu-west-1",
    "CRON": "*/5 * * * *",
    "GREETING": "Hello, world!",
    "EMPTY_PASSWORD": "",
    "DB_PASSWORD": "$(DB_PASSWORD_FROM_SECRET)",
    "HASH_ALGORITHM": "argon2id",
    "MAX_TOKENS": "4096",
    "LONG_UPPER": "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567",
    "WEBHOOK_URL": "https://hooks.example.com/services/T000/B000",
}

# (env var name, value, what the line says): names chosen to be innocent so the value decides.
SECRET_FORMATS = [
    pytest.param("KEY_ID", "AKIAIOSFODNN7EXAMPLE", "an AWS access key id", id="aws-akia"),
    pytest.param("STS", "id=ASIAJEXAMPLEXEG2JICE;", "an AWS access key id", id="aws-asia-in-text"),
    pytest.param(
        "TLS_KEY",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
        "a PEM private key",
        id="pem-rsa",
    ),
    pytest.param(
        "SIGNER",
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI\n-----END PRIVATE KEY-----",
        "a PEM private key",
        id="pem-pkcs8",
    ),
    pytest.param(
        "SSH",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEA\n",
        "a PEM private key",
        id="pem-openssh",
    ),
    pytest.param(
        "AUTHORIZATION",
        "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
        "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "a JWT",
        id="jwt",
    ),
    pytest.param(
        "DATABASE_URL", "postgres://app:s3cr3t@db:5432/app", "a URL with a password", id="url"
    ),
    pytest.param(
        "CACHE", "redis://:hunter2@redis:6379/0", "a URL with a password", id="url-no-user"
    ),
    pytest.param(
        "UPSTREAM",
        "https://deploy:glpat-abcdef@gitlab.example.com/group/app.git",
        "a URL with a password",
        id="url-git",
    ),
    pytest.param(
        "GH", "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8", "a GitHub token", id="github"
    ),
    pytest.param("SLACK", "xoxb-123456789012-abcdefghijkl", "a Slack token", id="slack"),
    pytest.param(
        "BILLING", "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc", "a Stripe live key", id="stripe"
    ),
    pytest.param(
        "MAPS", "AIza" + "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q", "a Google API key", id="gcp"
    ),
]

SECRET_NAMES = [
    "PASSWORD",
    "DB_PASSWORD",
    "dbPassword",
    "db.password",
    "MYSQL_ROOT_PASSWORD",
    "SMTP_PASSWD",
    "GPG_PASSPHRASE",
    "CLIENT_SECRET",
    "JWT_SECRET",
    "SECRET_KEY_BASE",
    "GITHUB_TOKEN",
    "accessToken",
    "API_KEY",
    "apiKey",
    "APIKey",
    "STRIPE_APIKEY",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "GCP_CREDENTIALS_JSON",
    "SIGNING_KEY",
    "ENCRYPTION_KEY",
    "VAULT_SECRET_ID",
    "ADMIN_PASSWORD_HASH",
    "DB_PASSWORD_PROD",
]


def _pod_with(name: str, value: str, field: str = "containers") -> list[str]:
    spec = {field: [container("app", env=[{"name": name, "value": value}])]}
    if field != "containers":
        spec["containers"] = [container("main")]
    return [v.line for v in check(request(spec), None, Policy(), "validate")]


@pytest.mark.parametrize(("name", "value"), ORDINARY.items(), ids=ORDINARY.keys())
def test_plaintext_no_false_positive_on_ordinary_env(name: str, value: str) -> None:
    assert _pod_with(name, value) == []


@pytest.mark.parametrize(("name", "value", "looks_like"), SECRET_FORMATS)
@pytest.mark.parametrize("field", ["containers", "initContainers", "ephemeralContainers"])
def test_plaintext_catches_each_format_in_every_container_kind(
    name: str, value: str, looks_like: str, field: str
) -> None:
    assert _pod_with(name, value, field) == [
        f"plaintextSecrets: container app env {name}: looks like {looks_like} "
        "(use an env.* annotation)"
    ]


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_plaintext_catches_secret_like_names(name: str) -> None:
    assert _pod_with(name, "correct-horse-battery") == [
        f"plaintextSecrets: container app env {name}: secret-like name, literal value "
        "(use an env.* annotation)"
    ]


@pytest.mark.parametrize(("name", "value", "looks_like"), SECRET_FORMATS)
def test_plaintext_line_never_contains_the_value(name: str, value: str, looks_like: str) -> None:
    del looks_like
    [line] = _pod_with(name, value)
    for length in range(8, len(value) + 1):
        assert value[-length:] not in line and value[:length] not in line


def test_plaintext_value_check_ignores_valuefrom() -> None:
    spec = {
        "containers": [
            container(
                "app",
                env=[
                    {
                        "name": "DB_PASSWORD",
                        "valueFrom": {"secretKeyRef": {"name": "db", "key": "p"}},
                    }
                ],
            )
        ]
    }
    assert check(request(spec), None, Policy(), "mutate") == []


@pytest.mark.parametrize(
    ("name", "words"),
    [
        pytest.param("AWS_SECRET_ACCESS_KEY", ["AWS", "SECRET", "ACCESS", "KEY"], id="snake"),
        pytest.param("dbPassword", ["DB", "PASSWORD"], id="camel"),
        pytest.param("APIKey", ["API", "KEY"], id="acronym"),
        pytest.param("db.password-2", ["DB", "PASSWORD", "2"], id="dots-dashes"),
    ],
)
def test_plaintext_words(name: str, words: list[str]) -> None:
    assert plaintext.words(name) == words
