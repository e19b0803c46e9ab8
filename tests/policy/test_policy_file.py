"""policy_file: the YAML format, errors with file, line and key, and reloading without restart."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from tests.policy.pods import container, env, injections, request
from webhook import policy_file
from webhook.errors import ConfigError
from webhook.metrics import Metrics
from webhook.pipeline import Context
from webhook.policy import (
    AllowedRefsRule,
    DeliveryGrant,
    DeliveryRule,
    EnvFromSecretsRule,
    PlaintextSecretsRule,
    Policy,
    RefGrant,
    SecretVolumesRule,
    check,
)
from webhook.settings import Settings

EXAMPLE = Path(__file__).parents[2] / "examples" / "policy.yaml"

AUDIT = "mode: audit\n"
BROKEN = "mode: enforce\nallowedRefs:\n  grants:\n    - refs: ['vault:secret/{ns}/*']\n"


def test_load_empty_file_is_the_default_policy(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("# nothing yet\n")
    assert policy_file.load(path) == Policy()


def test_load_example_file() -> None:
    policy = policy_file.load(EXAMPLE)
    assert policy.mode == "enforce"
    assert policy.allowed_refs.grants[0] == Policy().allowed_refs.grants[0]
    assert policy.allowed_refs.grants[1] == RefGrant(
        refs=("vault:secret/data/shared/stripe",),
        namespaces=("payments",),
        service_accounts=("billing",),
    )
    assert policy.delivery == DeliveryRule(
        grants=(
            DeliveryGrant(kinds=("file",)),
            DeliveryGrant(kinds=("env",), exclude_namespaces=("prod-*",)),
        )
    )
    assert policy.secret_volumes.max_mode == 0o440
    assert policy.env_from_secrets.action == "warn"
    assert policy.plaintext_secrets == PlaintextSecretsRule()


def test_load_example_file_behaves_as_documented() -> None:
    policy = policy_file.load(EXAMPLE)
    stripe = injections(env_STRIPE_KEY="vault:secret/data/shared/stripe#key")
    assert check(request(namespace="payments", service_account="billing"), stripe, policy, "") == []
    [denied] = check(request(namespace="payments", service_account="web"), stripe, policy, "")
    assert denied.rule == "allowedRefs"
    own_env = injections(env_DB="vault:secret/data/prod-eu/db#password")
    assert [v.rule for v in check(request(namespace="prod-eu"), own_env, policy, "")] == [
        "delivery"
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "mode: audt\n",
            "policy.yaml:1: mode: must be one of enforce | audit, got 'audt'",
            id="mode",
        ),
        pytest.param(
            "mode: audit\nalowedRefs: {}\n",
            "policy.yaml:2: alowedRefs: unknown key (did you mean allowedRefs?); known keys: "
            "allowedRefs, delivery, envFromSecrets, mode, plaintextSecrets, secretVolumes, "
            "unknownAnnotations",
            id="unknown-rule",
        ),
        pytest.param(
            "envFromSecrets: wanr\n",
            "policy.yaml:1: envFromSecrets: must be one of deny | warn | off, got 'wanr'",
            id="shorthand-action",
        ),
        pytest.param(
            "envFromSecrets: yes\n",
            "policy.yaml:1: envFromSecrets: must be one of deny | warn | off, got a boolean",
            id="shorthand-yes",
        ),
        pytest.param(
            "plaintextSecrets:\n  action: block\n",
            "policy.yaml:2: plaintextSecrets.action: must be one of deny | warn | off, got 'block'",
            id="action",
        ),
        pytest.param(
            "allowedRefs:\n  grants:\n    - namespaces: [a]\n      refs:\n        - 'vault:x/*'\n"
            "        - 'vault:secret/{ns}/*'\n",
            "policy.yaml:6: allowedRefs.grants.0.refs.1: 'vault:secret/{ns}/*' has an unknown "
            "placeholder {ns}; use {namespace} or {serviceAccount}",
            id="placeholder",
        ),
        pytest.param(
            "allowedRefs:\n  grants:\n    - refs: ['aws-sm:{namespace}*']\n",
            "policy.yaml:3: allowedRefs.grants.0.refs.0: 'aws-sm:{namespace}*': {namespace} must "
            "be followed by / or end the glob, or one tenant's glob could match another's names",
            id="placeholder-glued",
        ),
        pytest.param(
            "allowedRefs:\n  grants:\n    - refs: ['gcp:x']\n",
            "policy.yaml:3: allowedRefs.grants.0.refs.0: 'gcp:x' must start with one of vault:, "
            "aws-sm:, aws-ssm:",
            id="scheme",
        ),
        pytest.param(
            "allowedRefs:\n  grants:\n    - refs: ['vault:a/*']\n      namespaces: [Team_A]\n",
            "policy.yaml:4: allowedRefs.grants.0.namespaces.0: 'Team_A' is not a name glob "
            "(lowercase letters, digits, '-', '.' and '*')",
            id="namespace-glob",
        ),
        pytest.param(
            "allowedRefs:\n  grants:\n    - namespaces: [a]\n",
            "policy.yaml:3: allowedRefs.grants.0: refs must list at least one reference glob",
            id="grant-without-refs",
        ),
        pytest.param(
            "allowedRefs:\n  grants:\n    - refs: ['vault:a/*']\n      serviceAcounts: [x]\n",
            "policy.yaml:4: allowedRefs.grants.0.serviceAcounts: unknown key (did you mean "
            "serviceAccounts?); known keys: excludeNamespaces, namespaces, refs, serviceAccounts",
            id="grant-typo",
        ),
        pytest.param(
            "delivery:\n  grants:\n    - kinds: [file, envs]\n",
            "policy.yaml:3: delivery.grants.0.kinds.1: must be one of file | env, got 'envs'",
            id="kind",
        ),
        pytest.param(
            "secretVolumes:\n  maxMode: 0440\n",
            'policy.yaml:2: secretVolumes.maxMode: must be a quoted octal mode like "0440" (YAML '
            "reads 0440 as octal and 440 as decimal), got the number 288 (octal 0440)",
            id="mode-unquoted",
        ),
        pytest.param(
            "secretVolumes:\n  maxMode: 'rw'\n",
            "policy.yaml:2: secretVolumes.maxMode: must be an octal mode like \"0440\", got 'rw'",
            id="mode-text",
        ),
        pytest.param(
            "secretVolumes:\n  action: deny\n  maxMode: '1777'\n",
            "policy.yaml:1: secretVolumes: maxMode must be a file mode from 0000 to 0777, got 1777",
            id="mode-range",
        ),
        pytest.param(
            "plaintextSecrets:\n  ignoreNames: PUBLIC_*\n",
            "policy.yaml:2: plaintextSecrets.ignoreNames: must be a list, got a string",
            id="list",
        ),
        pytest.param(
            "mode: enforce\n  bad: [indent\n",
            "policy.yaml:2: not valid YAML: mapping values are not allowed here",
            id="yaml",
        ),
        pytest.param(
            "- mode\n", "policy.yaml: (top level): must be a mapping, got a list", id="top"
        ),
    ],
)
def test_loads_errors_name_line_and_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        policy_file.loads(text, "policy.yaml")
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("envFromSecrets: off\n", EnvFromSecretsRule(action="off"), id="unquoted-off"),
        pytest.param(
            "envFromSecrets: {action: off}\n", EnvFromSecretsRule(action="off"), id="mapping-off"
        ),
        pytest.param("envFromSecrets: deny\n", EnvFromSecretsRule(action="deny"), id="shorthand"),
    ],
)
def test_loads_action_forms(text: str, expected: EnvFromSecretsRule) -> None:
    assert policy_file.loads(text).env_from_secrets == expected


@pytest.mark.parametrize("mode", ["0400", "400", "0o400", " 0400 "])
def test_loads_max_mode_is_octal(mode: str) -> None:
    policy = policy_file.loads(f"secretVolumes: {{maxMode: '{mode}'}}\n")
    assert policy.secret_volumes == SecretVolumesRule(max_mode=0o400)


def test_load_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read"):
        policy_file.load(tmp_path / "nope.yaml")


# --- PolicySource ---------------------------------------------------------------------


def test_policy_source_without_file_is_the_default() -> None:
    source = policy_file.PolicySource(None)
    assert source.policy == Policy() and source.poll() is False


def test_policy_source_refuses_to_start_with_a_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(BROKEN)
    with pytest.raises(ConfigError, match=r"policy\.yaml:4: allowedRefs\.grants\.0\.refs\.0"):
        policy_file.PolicySource(path)


def test_policy_source_edit_takes_effect_and_broken_edit_keeps_the_old_policy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("mode: enforce\n")
    metrics = Metrics()
    changes: list[Policy] = []
    source = policy_file.PolicySource(path, metrics=metrics, on_change=changes.append)
    pod = request({"containers": [container("app", env=env(DB_PASSWORD="hunter2"))]})
    assert [v.action for v in check(pod, None, source.policy, "")] == ["deny"]
    assert source.poll() is False  # unchanged

    path.write_text(AUDIT)
    assert source.poll() is True
    assert [v.action for v in check(pod, None, source.policy, "")] == ["warn"]
    assert changes == [source.policy]

    caplog.set_level(logging.INFO, logger="webhook.policy_file")
    path.write_text(BROKEN)
    assert source.poll() is False
    assert source.policy.mode == "audit"  # the old policy stays in force
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == "policy file rejected, the previous policy stays in force"
    assert record.__dict__["error"].startswith(f"{path}:4: allowedRefs.grants.0.refs.0: ")
    assert source.poll() is False  # the same broken content is reported once
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1

    path.write_text("mode: enforce\nenvFromSecrets: deny\n")
    assert source.poll() is True
    assert source.policy.env_from_secrets.action == "deny"
    assert _reloads(metrics) == {"applied": 2.0, "rejected": 1.0}
    assert len(changes) == 2


def test_policy_source_survives_the_file_disappearing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(AUDIT)
    source = policy_file.PolicySource(path)
    path.unlink()
    assert source.poll() is False
    assert source.policy.mode == "audit"
    assert "cannot read" in caplog.records[-1].__dict__["error"]
    path.write_text(AUDIT)
    assert source.poll() is False  # back to the policy in force: nothing to apply
    assert source.policy.mode == "audit"


def test_policy_source_follows_a_configmap_symlink_swap(tmp_path: Path) -> None:
    """kubelet updates a mounted ConfigMap by pointing `..data` at a new directory."""
    (tmp_path / "..v1").mkdir()
    (tmp_path / "..v1" / "policy.yaml").write_text("mode: enforce\n")
    (tmp_path / "..data").symlink_to("..v1")
    (tmp_path / "policy.yaml").symlink_to("..data/policy.yaml")
    source = policy_file.PolicySource(tmp_path / "policy.yaml")
    assert source.policy == Policy()

    (tmp_path / "..v2").mkdir()
    (tmp_path / "..v2" / "policy.yaml").write_text(AUDIT)
    (tmp_path / "..data_tmp").symlink_to("..v2")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    assert source.poll() is True
    assert source.policy.mode == "audit"


async def test_policy_source_watch_reloads_without_restart(tmp_path: Path) -> None:
    """The server's wiring: `on_change` swaps the policy in the pipeline's context."""
    path = tmp_path / "policy.yaml"
    path.write_text("mode: enforce\n")
    ctx = Context(Settings(policy_file=str(path)), Policy())
    swapped, rejected = asyncio.Event(), asyncio.Event()

    def swap(policy: Policy) -> None:
        ctx.policy = policy
        swapped.set()

    class Rejections(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno == logging.ERROR:
                rejected.set()

    handler = Rejections()
    logging.getLogger("webhook.policy_file").addHandler(handler)
    source = policy_file.PolicySource(path, interval_seconds=0.01, on_change=swap)
    ctx.policy = source.policy
    task = asyncio.create_task(source.watch())
    try:
        path.write_text(AUDIT)
        async with asyncio.timeout(10):
            await swapped.wait()
        assert ctx.policy.mode == "audit"
        path.write_text(BROKEN)
        async with asyncio.timeout(10):
            await rejected.wait()
        assert ctx.policy.mode == "audit"
        assert not task.done()
    finally:
        logging.getLogger("webhook.policy_file").removeHandler(handler)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_policy_rules_built_in_python_are_checked_too() -> None:
    with pytest.raises(ValueError, match="unknown placeholder"):
        RefGrant(refs=("vault:{tenant}/*",))
    with pytest.raises(ValueError, match="kinds must list"):
        DeliveryGrant(kinds=())
    with pytest.raises(ValueError, match="namespaces must list"):
        AllowedRefsRule(grants=(RefGrant(refs=("vault:a",), namespaces=()),))


def _reloads(metrics: Metrics) -> dict[str, float]:
    return {
        sample.labels["result"]: sample.value
        for family in metrics.registry.collect()
        if family.name == "secret_injector_policy_reloads"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def test_readme_policy_example_loads_and_matches_the_example_file() -> None:
    readme = (EXAMPLE.parents[1] / "README.md").read_text()
    section = readme[readme.index("### The policy file") :]
    block = section[section.index("```yaml\n") + len("```yaml\n") :]
    documented = policy_file.loads(block[: block.index("```")], "README.md")
    assert documented == policy_file.load(EXAMPLE)


def test_readme_policy_error_example_is_what_check_config_prints() -> None:
    readme = (EXAMPLE.parents[1] / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if ln.startswith("policy.yaml:6: "))
    text = (
        "allowedRefs:\n  grants:\n    - namespaces: [a]\n      refs:\n"
        "        - 'vault:x/*'\n        - 'vault:secret/{ns}/*'\n"
    )
    with pytest.raises(ConfigError) as info:
        policy_file.loads(text, "policy.yaml")
    assert str(info.value) == line
