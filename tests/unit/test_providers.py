"""SecretProviderClass generation: the providers' exact parameter formats and naming."""

import json
from collections.abc import Mapping
from functools import cache
from typing import Any

import jsonschema
import orjson
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import DATA, PREFIX, make_pod, make_review
from webhook import annotations, providers, review
from webhook.providers import SpcPlan
from webhook.refs import PodInjection
from webhook.review import AdmissionRequest
from webhook.settings import AwsProvider, Providers, Settings, VaultProvider

SETTINGS = Settings()
ON = {PREFIX + "inject": "true"}
ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf"


def request_for(
    values: Mapping[str, str], namespace: str = "shop", service_account: str | None = None
) -> AdmissionRequest:
    pod = make_pod(values, namespace=namespace, service_account=service_account)
    return review.parse_review(orjson.dumps(make_review(pod)))


def plan_for(
    values: Mapping[str, str],
    config: Settings = SETTINGS,
    namespace: str = "shop",
    service_account: str | None = None,
) -> list[SpcPlan]:
    req = request_for(ON | dict(values), namespace, service_account)
    pod = annotations.parse(req.annotations, config)
    assert pod is not None
    return providers.plan(req, pod, config)


def objects(spc: SpcPlan) -> list[dict[str, Any]]:
    loaded = yaml.safe_load(spc.body["spec"]["parameters"]["objects"])
    assert isinstance(loaded, list)
    return loaded


@cache
def crd_schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    """The served v1 schema of the real CRD, and a copy that refuses unknown fields.

    The API server prunes unknown fields of a structural schema silently, so a misspelt
    field would vanish instead of failing: the strict copy catches that.
    """
    crd = yaml.safe_load((DATA / "secretproviderclass-crd.yaml").read_text())
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1" and v["served"]]
    schema = served["schema"]["openAPIV3Schema"]
    return schema, _closed(json.loads(json.dumps(schema)))


def _closed(schema: Any) -> Any:
    if isinstance(schema, dict):
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        for value in schema.values():
            _closed(value)
    elif isinstance(schema, list):
        for value in schema:
            _closed(value)
    return schema


# A table of pods; every test below checks its invariants on each of them.
CASES = {
    "vault-file": {PREFIX + "file.db": "vault:secret/data/shop/db#password"},
    "vault-env": {PREFIX + "env.DB_PASSWORD": "vault:secret/data/shop/db#password"},
    "vault-file-and-env-share": {
        PREFIX + "file.db": "vault:secret/data/shop/db#password",
        PREFIX + "env.DB_PASSWORD": "vault:secret/data/shop/db#password",
        PREFIX + "env.DB_PASS": "vault:secret/data/shop/db#password",
    },
    "vault-same-ref-two-files": {
        PREFIX + "file.a": "vault:secret/data/shop/db#password",
        PREFIX + "file.b": "vault:secret/data/shop/db#password",
    },
    "vault-pinned": {PREFIX + "file.db": "vault:secret/data/shop/db#password?version=4"},
    "sm-whole": {PREFIX + "file.api-key": "aws-sm:shop/api-key"},
    "sm-keys": {
        PREFIX + "env.DB_USER": "aws-sm:shop/db#username",
        PREFIX + "file.db-password": "aws-sm:shop/db#password",
    },
    "sm-whole-and-keys": {
        PREFIX + "file.db.json": "aws-sm:shop/db",
        PREFIX + "file.db-password": "aws-sm:shop/db#password",
        PREFIX + "env.DB_HOST": "aws-sm:shop/db#host-name",
    },
    "sm-two-whole-files": {
        PREFIX + "file.a": "aws-sm:shop/db",
        PREFIX + "file.b": "aws-sm:shop/db",
    },
    "sm-versions": {
        PREFIX + "file.now": "aws-sm:shop/db#password",
        PREFIX + "file.before": "aws-sm:shop/db#password?version-stage=AWSPREVIOUS",
        PREFIX + "file.pinned": "aws-sm:shop/db?version-id=" + "0" * 32,
    },
    "sm-arn": {PREFIX + "file.db": "aws-sm:" + ARN},
    "ssm": {
        PREFIX + "file.flag": "aws-ssm:/shop/flag",
        PREFIX + "env.FLAG": "aws-ssm:/shop/flag",
        PREFIX + "env.TOKEN": "aws-ssm:/shop/token",
    },
    "both-backends": {
        PREFIX + "file.db": "vault:secret/data/shop/db#password",
        PREFIX + "env.API_KEY": "aws-sm:shop/api#key",
        PREFIX + "aws-region": "us-west-2",
        PREFIX + "vault-role": "shop-api",
        PREFIX + "mount-path": "/var/run/secrets/shop",
    },
}


@pytest.mark.parametrize("values", CASES.values(), ids=CASES.keys())
def test_plan_spc_validates_against_the_crd(values: dict[str, str]) -> None:
    loose, strict = crd_schemas()
    for spc in plan_for(values):
        jsonschema.validate(spc.body, loose)
        jsonschema.validate(spc.body, strict)
        assert all(isinstance(v, str) for v in spc.body["spec"]["parameters"].values())
        assert spc.body["metadata"] == {
            "name": spc.name,
            "namespace": "shop",
            "labels": {"app.kubernetes.io/managed-by": "secret-injector"},
        }


@pytest.mark.parametrize("values", CASES.values(), ids=CASES.keys())
def test_plan_objects_pass_the_providers_own_checks(values: dict[str, str]) -> None:
    """What vault-csi-provider validate() and the AWS NewSecretDescriptorList refuse."""
    for spc in plan_for(values):
        entries = objects(spc)
        if spc.provider == "vault":
            files = [e["objectName"] for e in entries]
            assert len(files) == len(set(files))  # objectName unique within an SPC
            assert all(e.keys() == {"objectName", "secretPath", "secretKey"} for e in entries)
        else:
            files = [e["objectAlias"] for e in entries]
            files += [j["objectAlias"] for e in entries for j in e.get("jmesPath", [])]
            assert len(files) == len(set(files))  # every alias unique, jmesPath ones too
            ssm = [e["objectName"] for e in entries if e["objectType"] == "ssmparameter"]
            assert len(ssm) == len(set(ssm))  # GetParameters batches are keyed by name
            for entry in entries:
                assert entry["objectType"] in ("secretsmanager", "ssmparameter")
                assert not ("objectVersion" in entry and "objectVersionLabel" in entry)
                for jmes in entry.get("jmesPath", []):
                    assert jmes.keys() == {"path", "objectAlias"}
        # Every env var's Secret key comes from a file the provider writes into the mount.
        synced = spc.body["spec"].get("secretObjects", [])
        for secret in synced:
            assert secret["secretName"] == spc.name
            assert {d["objectName"] for d in secret["data"]} <= set(files)
        assert [d["key"] for s in synced for d in s["data"]] == [key for _, key in spc.env]


@pytest.mark.parametrize("values", CASES.values(), ids=CASES.keys())
def test_plan_file_annotation_is_a_file_of_its_own_name(values: dict[str, str]) -> None:
    plans = {spc.provider: spc for spc in plan_for(values)}
    pod = annotations.parse(ON | values, SETTINGS)
    assert pod is not None
    for injection in pod.injections:
        spc = plans[injection.ref.provider]
        key = "objectName" if spc.provider == "vault" else "objectAlias"
        written = {e[key] for e in objects(spc)}
        written |= {j["objectAlias"] for e in objects(spc) for j in e.get("jmesPath", [])}
        if injection.delivery == "file":
            assert injection.target in written
            assert providers.file_path(pod, injection) == (
                f"{pod.mount_path}/{spc.provider}/{injection.target}"
            )
            assert spc.mount_path == f"{pod.mount_path}/{spc.provider}"
        hidden = written - {i.target for i in pod.injections if i.delivery == "file"}
        assert all(name.startswith(".secret-injector.") for name in hidden)


def test_plan_vault_spc_in_the_provider_format() -> None:
    (spc,) = plan_for(
        CASES["vault-file-and-env-share"]
        | CASES["vault-pinned"]
        | {
            PREFIX + "env.API_TOKEN": "vault:secret/data/shop/api#token",
        }
    )
    assert spc.provider == "vault"
    assert spc.name.startswith("secret-injector-vault-") and len(spc.name) == 32
    assert spc.volume_name == "secret-injector-vault"
    assert spc.mount_path == "/mnt/secrets/vault"
    assert spc.env == (
        ("API_TOKEN", "API_TOKEN"),
        ("DB_PASS", "DB_PASS"),
        ("DB_PASSWORD", "DB_PASSWORD"),
    )
    assert spc.body["spec"] == {
        "provider": "vault",
        "parameters": {
            "roleName": "shop",
            "vaultKubernetesMountPath": "kubernetes",
            "objects": (
                '- objectName: "db"\n'
                '  secretPath: "secret/data/shop/db?version=4"\n'
                '  secretKey: "password"\n'
                '- objectName: ".secret-injector.env.API_TOKEN"\n'
                '  secretPath: "secret/data/shop/api"\n'
                '  secretKey: "token"\n'
                '- objectName: ".secret-injector.env.DB_PASS"\n'
                '  secretPath: "secret/data/shop/db"\n'
                '  secretKey: "password"\n'
            ),
        },
        "secretObjects": [
            {
                "secretName": spc.name,
                "type": "Opaque",
                "labels": {"app.kubernetes.io/managed-by": "secret-injector"},
                "data": [
                    {"objectName": ".secret-injector.env.API_TOKEN", "key": "API_TOKEN"},
                    {"objectName": ".secret-injector.env.DB_PASS", "key": "DB_PASS"},
                    {"objectName": ".secret-injector.env.DB_PASS", "key": "DB_PASSWORD"},
                ],
            }
        ],
    }


def test_plan_vault_env_shares_the_file_of_the_same_reference() -> None:
    (spc,) = plan_for(CASES["vault-file-and-env-share"])
    assert [e["objectName"] for e in objects(spc)] == ["db"]
    assert spc.body["spec"]["secretObjects"][0]["data"] == [
        {"objectName": "db", "key": "DB_PASS"},
        {"objectName": "db", "key": "DB_PASSWORD"},
    ]


def test_plan_aws_spc_in_the_provider_format() -> None:
    config = Settings(providers=Providers(aws=AwsProvider(region="eu-west-1")))
    (spc,) = plan_for(CASES["sm-whole-and-keys"] | CASES["sm-versions"] | CASES["ssm"], config)
    assert spc.provider == "aws"
    assert spc.volume_name == "secret-injector-aws"
    assert spc.mount_path == "/mnt/secrets/aws"
    parameters = spc.body["spec"]["parameters"]
    assert parameters["region"] == "eu-west-1"
    # In annotation order (file.before, file.db-password, ...): one entry per secret version.
    assert objects(spc) == [
        {
            "objectName": "shop/db",
            "objectType": "secretsmanager",
            "objectVersionLabel": "AWSPREVIOUS",
            "objectAlias": spc_hidden_secret(spc, "AWSPREVIOUS"),
            "jmesPath": [{"path": '"password"', "objectAlias": "before"}],
        },
        {
            "objectName": "shop/db",
            "objectType": "secretsmanager",
            "objectAlias": "db.json",
            "jmesPath": [
                {"path": '"password"', "objectAlias": "db-password"},
                {"path": '"password"', "objectAlias": "now"},
                {"path": '"host-name"', "objectAlias": ".secret-injector.env.DB_HOST"},
            ],
        },
        {
            "objectName": "shop/db",
            "objectType": "secretsmanager",
            "objectVersion": "0" * 32,
            "objectAlias": "pinned",
        },
        {"objectName": "/shop/flag", "objectType": "ssmparameter", "objectAlias": "flag"},
        {
            "objectName": "/shop/token",
            "objectType": "ssmparameter",
            "objectAlias": ".secret-injector.env.TOKEN",
        },
    ]
    assert spc.body["spec"]["secretObjects"][0]["data"] == [
        {"objectName": ".secret-injector.env.DB_HOST", "key": "DB_HOST"},
        {"objectName": "flag", "key": "FLAG"},
        {"objectName": ".secret-injector.env.TOKEN", "key": "TOKEN"},
    ]


def spc_hidden_secret(spc: SpcPlan, stage: str) -> str:
    (entry,) = [e for e in objects(spc) if e.get("objectVersionLabel") == stage]
    alias = entry["objectAlias"]
    assert isinstance(alias, str)
    assert alias.startswith(".secret-injector.secret.") and len(alias) == 34
    return alias


def test_plan_aws_keys_of_one_secret_share_one_fetch() -> None:
    (spc,) = plan_for(CASES["sm-keys"])
    (entry,) = objects(spc)
    assert entry["objectAlias"].startswith(".secret-injector.secret.")
    assert entry["jmesPath"] == [
        {"path": '"password"', "objectAlias": "db-password"},
        {"path": '"username"', "objectAlias": ".secret-injector.env.DB_USER"},
    ]


def test_plan_aws_second_whole_file_is_its_own_entry() -> None:
    (spc,) = plan_for(CASES["sm-two-whole-files"])
    assert objects(spc) == [
        {"objectName": "shop/db", "objectType": "secretsmanager", "objectAlias": "a"},
        {"objectName": "shop/db", "objectType": "secretsmanager", "objectAlias": "b"},
    ]


@pytest.mark.parametrize(
    "key",
    ["password", "db-password", "with.dot", 'quo"te', "back\\slash", "caf\u00e9"],
)
def test_plan_aws_json_key_is_a_quoted_jmespath_identifier(key: str) -> None:
    (spc,) = plan_for({PREFIX + "file.x": f"aws-sm:shop/db#{key}"})
    (jmes,) = objects(spc)[0]["jmesPath"]
    assert json.loads(jmes["path"]) == key  # a JMESPath quoted identifier is a JSON string


@pytest.mark.parametrize(
    ("values", "region", "expected"),
    [
        pytest.param(
            {PREFIX + "aws-region": "ap-south-1"}, "eu-west-1", "ap-south-1", id="annotation"
        ),
        pytest.param({}, "eu-west-1", "eu-west-1", id="config"),
        pytest.param({PREFIX + "file.arn": "aws-sm:" + ARN}, None, "eu-west-1", id="arn"),
        pytest.param({}, None, None, id="node-label"),
    ],
)
def test_plan_aws_region(values: dict[str, str], region: str | None, expected: str | None) -> None:
    config = Settings(providers=Providers(aws=AwsProvider(region=region)))
    (spc,) = plan_for({PREFIX + "file.flag": "aws-ssm:/shop/flag"} | values, config)
    assert spc.body["spec"]["parameters"].get("region") == expected


@pytest.mark.parametrize(("pod_identity", "expected"), [(False, None), (True, "true")])
def test_plan_aws_pod_identity_comes_from_config(pod_identity: bool, expected: str | None) -> None:
    config = Settings(providers=Providers(aws=AwsProvider(use_pod_identity=pod_identity)))
    (spc,) = plan_for({PREFIX + "file.flag": "aws-ssm:/shop/flag"}, config)
    assert spc.body["spec"]["parameters"].get("usePodIdentity") == expected


@pytest.mark.parametrize(
    ("values", "template", "service_account", "expected"),
    [
        pytest.param({}, "{namespace}", None, "shop", id="default"),
        pytest.param({}, "{namespace}-{serviceAccount}", "api", "shop-api", id="template"),
        pytest.param({}, "k8s-{serviceAccount}", None, "k8s-default", id="default-sa"),
        pytest.param(
            {PREFIX + "vault-role": "payments"}, "{namespace}", None, "payments", id="annotation"
        ),
    ],
)
def test_plan_vault_role(
    values: dict[str, str], template: str, service_account: str | None, expected: str
) -> None:
    config = Settings(providers=Providers(vault=VaultProvider(default_role=template)))
    values = {PREFIX + "file.db": "vault:secret/data/shop/db#pw"} | values
    (spc,) = plan_for(values, config, service_account=service_account)
    assert spc.body["spec"]["parameters"]["roleName"] == expected


def test_plan_vault_address_namespace_and_mount_come_from_config() -> None:
    vault = VaultProvider(
        address="https://vault.vault:8200", auth_mount_path="k8s-prod", namespace="team-a"
    )
    config = Settings(providers=Providers(vault=vault))
    (spc,) = plan_for({PREFIX + "file.db": "vault:secret/data/shop/db#pw"}, config)
    parameters = spc.body["spec"]["parameters"]
    assert {k: v for k, v in parameters.items() if k != "objects"} == {
        "roleName": "shop",
        "vaultAddress": "https://vault.vault:8200",
        "vaultKubernetesMountPath": "k8s-prod",
        "vaultNamespace": "team-a",
    }


def test_plan_same_annotations_give_the_same_name() -> None:
    values = CASES["both-backends"]
    reordered = dict(reversed(list(values.items())))
    first = [spc.name for spc in plan_for(values)]
    assert first == [spc.name for spc in plan_for(reordered)]
    # Same content in another namespace: same name there too (roles differ unless explicit).
    assert first == [spc.name for spc in plan_for(values, namespace="other")]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({PREFIX + "file.db": "vault:secret/data/shop/db#user"}, id="key"),
        pytest.param({PREFIX + "file.db2": "vault:secret/data/shop/db#password"}, id="file"),
        pytest.param({PREFIX + "env.X": "vault:secret/data/shop/db#password"}, id="env"),
        pytest.param({PREFIX + "vault-role": "other"}, id="role"),
    ],
)
def test_plan_other_content_gets_another_name(change: dict[str, str]) -> None:
    base = {PREFIX + "file.db": "vault:secret/data/shop/db#password"}
    (before,) = plan_for(base)
    (after,) = plan_for(base | change)
    assert before.name != after.name


def test_plan_providers_in_a_stable_order() -> None:
    assert [spc.provider for spc in plan_for(CASES["both-backends"])] == ["vault", "aws"]


def test_objects_yaml_aws_format() -> None:
    text = providers.objects_yaml(
        [
            {
                "objectName": "shop/db",
                "objectType": "secretsmanager",
                "objectAlias": "db.json",
                "jmesPath": [
                    {"path": '"password"', "objectAlias": "db-password"},
                    {"path": '"user"', "objectAlias": "user"},
                ],
            },
            {"objectName": "/shop/flag", "objectType": "ssmparameter", "objectAlias": "flag"},
        ]
    )
    assert text == (
        '- objectName: "shop/db"\n'
        '  objectType: "secretsmanager"\n'
        '  objectAlias: "db.json"\n'
        "  jmesPath:\n"
        '  - path: "\\"password\\""\n'
        '    objectAlias: "db-password"\n'
        '  - path: "\\"user\\""\n'
        '    objectAlias: "user"\n'
        '- objectName: "/shop/flag"\n'
        '  objectType: "ssmparameter"\n'
        '  objectAlias: "flag"\n'
    )


_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {"objectName": _TEXT, "secretKey": _TEXT},
            optional={"jmesPath": st.lists(st.fixed_dictionaries({"path": _TEXT, "alias": _TEXT}))},
        ),
        max_size=4,
    )
)
def test_objects_yaml_reads_back_as_written(objects_: list[dict[str, Any]]) -> None:
    assert yaml.safe_load(providers.objects_yaml(objects_)) == objects_


def test_plan_without_injections_is_empty() -> None:
    req = request_for(ON)
    assert providers.plan(req, PodInjection(injections=()), SETTINGS) == []
