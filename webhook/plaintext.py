"""Recognise secrets written in plain text: secret-like env var names, known credential formats.

Both functions say *that* something looks secret and, for values, which format it looks
like; neither returns any part of the value, so nothing downstream can echo it.

Names are split into words (`DB_PASSWORD`, `dbPassword`, `db.password` -> DB PASSWORD).
A name is secret-like when a word (PASSWORD, TOKEN, ...) or a pair (API KEY, PRIVATE KEY,
...) says so, unless a later word says the variable is *about* a secret rather than the
secret itself: `POSTGRES_PASSWORD_FILE`, `TOKEN_URL`, `SECRET_NAME`, `PASSWORD_MIN_LENGTH`.

Value formats are the high-precision ones (fixed prefixes and shapes), so ordinary values
(URLs without a password, UUIDs, digests, base64 blobs) never match: there is no entropy
guessing.
"""

from __future__ import annotations

import functools
import re

SECRET_WORDS = frozenset(
    {
        "PASSWORD",
        "PASSWD",
        "PASSPHRASE",
        "SECRET",
        "SECRETS",
        "TOKEN",
        "TOKENS",
        "APIKEY",
        "CREDENTIAL",
        "CREDENTIALS",
        "PRIVATEKEY",
    }
)
SECRET_PAIRS = frozenset(
    {
        ("API", "KEY"),
        ("ACCESS", "KEY"),
        ("PRIVATE", "KEY"),
        ("AUTH", "KEY"),
        ("SIGNING", "KEY"),
        ("ENCRYPTION", "KEY"),
        ("MASTER", "KEY"),
        ("HMAC", "KEY"),
        ("LICENSE", "KEY"),
        ("SESSION", "KEY"),
    }
)
# A word after the secret word that makes the variable metadata about a secret.
ABOUT_WORDS = frozenset(
    {
        "ALG",
        "ALGORITHM",
        "ARN",
        "AUDIENCE",
        "BACKEND",
        "COUNT",
        "DIR",
        "ENABLED",
        "ENDPOINT",
        "EXPIRATION",
        "EXPIRES",
        "EXPIRY",
        "FIELD",
        "FILE",
        "FILENAME",
        "FORMAT",
        "HEADER",
        "HOST",
        "INTERVAL",
        "ISSUER",
        "KIND",
        "LEN",
        "LENGTH",
        "LIFETIME",
        "LIMIT",
        "LOCATION",
        "MODE",
        "MOUNT",
        "NAME",
        "PATH",
        "POLICY",
        "PORT",
        "PREFIX",
        "PROVIDER",
        "REF",
        "REFRESH",
        "REQUIRED",
        "ROTATION",
        "SCOPE",
        "SCOPES",
        "SECONDS",
        "SIZE",
        "SOURCE",
        "STORE",
        "TIMEOUT",
        "TTL",
        "TYPE",
        "URI",
        "URL",
        "VERSION",
    }
)
# A word just before the secret word that makes the variable a quantity: MAX_TOKENS.
QUANTITY_WORDS = frozenset({"MAX", "MIN", "NUM", "COUNT"})
# Literal values that are switches or placeholders, not secrets.
NOT_SECRET_VALUES = frozenset(
    {"", "true", "false", "yes", "no", "on", "off", "enabled", "disabled", "none", "null", "nil"}
)

_WORDS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
# Kubernetes dependent variables `$(NAME)` and shell/template placeholders `${NAME}`.
_REFERENCE = re.compile(r"\$\([A-Za-z_][A-Za-z0-9_]*\)|\$\{[A-Za-z_][A-Za-z0-9_]*\}")
# `scheme://user:password@`: the userinfo after `://` holds a `:` (RFC 3986, 3.2.1).
_URL_PASSWORD = re.compile(r"://[^/\s:@?#]*:([^/\s@?#]+)@")

# (what it looks like, literals one of which it contains, pattern). Sources: AWS IAM
# identifiers (access key id prefixes), RFC 7468 (PEM labels), RFC 7519 (JWT: base64url JSON
# header and payload start `eyJ`), RFC 3986 (userinfo), and the token prefixes GitHub, Slack,
# Stripe and Google publish. The literals are a cheap test that skips the regular expressions
# for nearly every ordinary value (a review may carry hundreds of env vars).
VALUE_FORMATS: tuple[tuple[str, tuple[str, ...], re.Pattern[str]], ...] = (
    (
        "a PEM private key",
        ("-----BEGIN ",),
        re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"),
    ),
    (
        "an AWS access key id",
        ("A3T", "AKIA", "ASIA", "ABIA", "ACCA"),
        re.compile(r"(?<![A-Z0-9])(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}(?![A-Z0-9])"),
    ),
    (
        "a JWT",
        ("eyJ",),
        re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\."),
    ),
    (
        "a GitHub token",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        re.compile(r"(?<![A-Za-z0-9])(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})"),
    ),
    ("a Slack token", ("xox",), re.compile(r"(?<![A-Za-z0-9])xox[abposr]-[A-Za-z0-9-]{10,}")),
    ("a Stripe live key", ("k_live_",), re.compile(r"(?<![A-Za-z0-9])[rs]k_live_[A-Za-z0-9]{16,}")),
    (
        "a Google API key",
        ("AIza",),
        re.compile(r"(?<![A-Za-z0-9])AIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])"),
    ),
)
_SHORTEST_FORMAT = len("a://b:c@")  # every format above is longer than this
_LITERALS = re.compile(
    "|".join(re.escape(literal) for _, literals, _ in VALUE_FORMATS for literal in literals)
    + "|://"
)


def words(name: str) -> list[str]:
    """`dbPassword` -> [DB, PASSWORD]; `AWS_SECRET_ACCESS_KEY` -> [AWS, SECRET, ACCESS, KEY]."""
    return [word.upper() for word in _WORDS.findall(name)]


@functools.lru_cache(maxsize=4096)  # the same few names come back in every review
def is_secret_name(name: str) -> bool:
    """Whether an env var of this name would hold a secret."""
    parts = words(name)
    last = -1
    for index, word in enumerate(parts):
        if index > 0 and (parts[index - 1], word) in SECRET_PAIRS:
            start = index - 1
        elif word in SECRET_WORDS:
            start = index
        else:
            continue
        if start == 0 or parts[start - 1] not in QUANTITY_WORDS:
            last = index
    if last < 0:
        return False
    return not any(word in ABOUT_WORDS for word in parts[last + 1 :])


def is_placeholder(value: str) -> bool:
    """A switch (`true`), an empty value, or only `$(VAR)` references: no secret in it."""
    if value.strip().lower() in NOT_SECRET_VALUES:
        return True
    rest = _REFERENCE.sub("", value)
    return rest != value and not any(c.isalnum() for c in rest)


def secret_format(value: str) -> str | None:
    """The known credential format `value` contains ("a JWT"), or None."""
    # Nearly every value is shorter than any format, or has none of their literals: one
    # length test or one scan, and done.
    if len(value) < _SHORTEST_FORMAT or _LITERALS.search(value) is None:
        return None
    for description, literals, pattern in VALUE_FORMATS:
        for literal in literals:
            if literal in value:
                if pattern.search(value):
                    return description
                break
    if "://" in value:
        for match in _URL_PASSWORD.finditer(value):
            if not _REFERENCE.fullmatch(match.group(1)):
                return "a URL with a password"
    return None
