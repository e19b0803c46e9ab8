"""globs: tenancy globs never let one namespace reach another's paths, however written."""

from __future__ import annotations

import pytest

from tests.policy.pods import injections, request
from webhook import globs
from webhook.policy import AllowedRefsRule, Policy, RefGrant, check


@pytest.mark.parametrize(
    ("glob", "subject", "matches"),
    [
        pytest.param("vault:secret/data/{namespace}/*", "vault:secret/data/a/db", True, id="own"),
        pytest.param(
            "vault:secret/data/{namespace}/*", "vault:secret/data/a/app/db", True, id="own-nested"
        ),
        pytest.param(
            "vault:secret/data/{namespace}/*", "vault:secret/data/a-b/db", False, id="prefix-tenant"
        ),
        pytest.param("vault:secret/data/{namespace}/*", "vault:secret/data/a", False, id="folder"),
        pytest.param(
            "vault:secret/data/{namespace}/*", "vault:secret/data/b/db", False, id="other"
        ),
        pytest.param(
            "vault:secret/data/{namespace}/*", "aws-sm:secret/data/a/x", False, id="scheme"
        ),
        pytest.param("aws-ssm:/{namespace}/*", "aws-ssm:/a/db", True, id="ssm-own"),
        pytest.param("aws-ssm:/{namespace}/*", "aws-ssm:a/db", False, id="ssm-no-leading-slash"),
        pytest.param(
            "vault:secret/data/*/shared/*",
            "vault:secret/data/b/shared/x",
            True,
            id="inner-star-one-segment",
        ),
        pytest.param(
            "vault:secret/data/*/shared/*",
            "vault:secret/data/b/private/shared/x",
            False,
            id="inner-star-not-across-slash",
        ),
        pytest.param("aws-sm:shared-*", "aws-sm:shared-db/x", True, id="trailing-star-prefix"),
        pytest.param(
            "vault:secret/data/{namespace}/{serviceAccount}/*",
            "vault:secret/data/a/web/db",
            True,
            id="account-own",
        ),
        pytest.param(
            "vault:secret/data/{namespace}/{serviceAccount}/*",
            "vault:secret/data/a/batch/db",
            False,
            id="account-other",
        ),
        pytest.param("vault:secret/data/a/db", "vault:secret/data/a/db", True, id="exact"),
        pytest.param("vault:secret/data/a/db", "vault:secret/data/a/dbx", False, id="exact-only"),
        pytest.param(
            "vault:secret/data/a.b/*", "vault:secret/data/aXb/db", False, id="dot-literal"
        ),
    ],
)
def test_ref_matches(glob: str, subject: str, matches: bool) -> None:
    assert globs.ref_matches(glob, subject, "a", "web") is matches


def test_ref_matches_placeholder_values_are_literal() -> None:
    """A namespace is text, never a pattern (a `.` in an account name matches only a `.`)."""
    assert globs.ref_matches("aws-sm:{serviceAccount}/*", "aws-sm:w.b/x", "a", "w.b")
    assert not globs.ref_matches("aws-sm:{serviceAccount}/*", "aws-sm:wxb/x", "a", "w.b")


@pytest.mark.parametrize(
    ("glob", "problem"),
    [
        pytest.param(
            "secret/data/*", "must start with one of vault:, aws-sm:, aws-ssm:", id="scheme"
        ),
        pytest.param("gcp:x/*", "must start with one of", id="unknown-scheme"),
        pytest.param("vault:", "has nothing after vault:", id="empty"),
        pytest.param("vault:secret/{ns}/*", "unknown placeholder {ns}", id="placeholder"),
        pytest.param("aws-sm:{namespace}*", "must be followed by / or end", id="glued-star"),
        pytest.param("aws-sm:{namespace}-x/*", "must be followed by / or end", id="glued-text"),
        pytest.param("vault:secret/{namespace/*", "unbalanced", id="brace"),
        pytest.param("vault:secret/../*", "a '..' segment", id="dotdot"),
        pytest.param("vault:secret//x/*", "an empty segment", id="double-slash"),
        pytest.param("vault:secret/%2e%2e/*", "'%'", id="percent"),
    ],
)
def test_check_ref_glob_refuses(glob: str, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        globs.check_ref_glob(glob)
    assert problem in str(info.value)


@pytest.mark.parametrize(
    "glob",
    [
        "vault:secret/data/{namespace}/*",
        "aws-ssm:/{namespace}/*",
        "aws-sm:{namespace}/{serviceAccount}/*",
        "aws-sm:{namespace}",
        "vault:*",
        "aws-sm:arn:aws:secretsmanager:*:123456789012:secret:{namespace}/*",
    ],
)
def test_check_ref_glob_accepts(glob: str) -> None:
    globs.check_ref_glob(glob)


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        pytest.param("secret/data/a/db", None, id="plain"),
        pytest.param("/a/db", None, id="leading-slash"),
        pytest.param("", "an empty path", id="empty"),
        pytest.param("secret/data/a/../b/db", "a '..' segment", id="dotdot"),
        pytest.param("../b/db", "a '..' segment", id="leading-dotdot"),
        pytest.param("secret/./data/a", "a '.' segment", id="dot"),
        pytest.param("secret/data/a//db", "an empty segment (// or a trailing /)", id="double"),
        pytest.param("secret/data/a/", "an empty segment (// or a trailing /)", id="trailing"),
        pytest.param("//a/db", "an empty segment (// or a trailing /)", id="two-leading"),
        pytest.param("secret/data/a/%2e%2e/b", "a '%', '\\', space or control character", id="pct"),
        pytest.param("secret\\data", "a '%', '\\', space or control character", id="backslash"),
        pytest.param("secret/data/a b", "a '%', '\\', space or control character", id="space"),
        pytest.param("a/db\n", "a '%', '\\', space or control character", id="newline"),
        pytest.param("a..b/c.d", None, id="dots-inside-names"),
    ],
)
def test_canonical_problem(path: str, problem: str | None) -> None:
    assert globs.canonical_problem(path) == problem


@pytest.mark.parametrize(
    "reference",
    [
        "vault:secret/data/team-a/../team-b/db#password",
        "vault:secret/data/team-a/./../team-b/db#password",
        "vault:secret/data/team-a//../team-b/db#password",
        "vault:secret/data/team-a/%2e%2e/team-b/db#password",
        "aws-sm:team-a/../team-b/db",
        "aws-ssm:/team-a/../team-b/db",
        "vault:secret/data/team-a-evil/db#password",
        "aws-sm:team-a-evil/db",
        "aws-sm:team-a",
        "aws-sm:arn:aws:secretsmanager:us-east-1:123456789012:secret:team-a/db-AbCdEf",
        "vault:/secret/data/team-a/db#password",
    ],
)
def test_default_policy_denies_escapes_from_the_namespace(reference: str) -> None:
    """Each of these would reach outside team-a's own paths (or cannot be proven not to)."""
    pod = injections(file_x=reference)
    assert [v.rule for v in check(request(namespace="team-a"), pod, Policy(), "mutate")] == [
        "allowedRefs"
    ]


def test_arn_grant_allows_the_namespace_prefix_in_one_account() -> None:
    grant = "aws-sm:arn:aws:secretsmanager:*:123456789012:secret:{namespace}/*"
    policy = Policy(allowed_refs=AllowedRefsRule(grants=(RefGrant(refs=(grant,)),)))
    own = "aws-sm:arn:aws:secretsmanager:us-east-1:123456789012:secret:team-a/db-AbCdEf"
    other_account = "aws-sm:arn:aws:secretsmanager:us-east-1:999999999999:secret:team-a/db-AbCdEf"
    assert check(request(), injections(file_x=own), policy, "mutate") == []
    assert len(check(request(), injections(file_x=other_account), policy, "mutate")) == 1


@pytest.mark.parametrize(
    ("glob", "name", "matches"),
    [
        pytest.param("*", "anything", True, id="star"),
        pytest.param("team-*", "team-a", True, id="prefix"),
        pytest.param("team-*", "teams", False, id="prefix-miss"),
        pytest.param("*-prod", "pay-prod", True, id="suffix"),
        pytest.param("web", "web", True, id="exact"),
        pytest.param("web", "web2", False, id="exact-only"),
    ],
)
def test_name_matches(glob: str, name: str, matches: bool) -> None:
    assert globs.name_matches(glob, name) is matches


@pytest.mark.parametrize("glob", ["Team", "team_a", "team/a", "", "team a"])
def test_check_name_glob_refuses(glob: str) -> None:
    with pytest.raises(ValueError, match="is not a name glob"):
        globs.check_name_glob(glob)
