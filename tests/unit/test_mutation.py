"""The patch: add-only JSON Patch ops that give a valid pod, keep every user field, and
come back empty on their own output."""

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonpatch
import jsonpointer
import kubernetes_validate
import orjson
import pytest
import yaml

from tests.conftest import DATA, PREFIX, make_pod, make_review
from webhook import annotations, mutation, pipeline, policy, providers, review
from webhook.errors import AnnotationError, ConflictError
from webhook.providers import SpcPlan
from webhook.refs import PodInjection
from webhook.settings import Settings

SETTINGS = Settings()
ON = {PREFIX + "inject": "true"}
VAULT_DB = {PREFIX + "file.db": "vault:secret/data/shop/db#password"}
VAULT_ENV = {PREFIX + "env.DB_PASSWORD": "vault:secret/data/shop/db#password"}
AWS_FILE = {PREFIX + "file.api-key": "aws-sm:shop/api-key"}
AWS_ENV = {PREFIX + "env.API_KEY": "aws-sm:shop/api#key", PREFIX + "env.FLAG": "aws-ssm:/shop/flag"}
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
# Where an op may point: new lists or maps, appends, and the marker. Nothing else.
ALLOWED_PATH = re.compile(
    r"/spec/volumes(/-)?"
    r"|/spec/(containers|initContainers)/\d+/(env|volumeMounts)(/-)?"
    r"|/metadata(/annotations(/[^/]+)?)?"
)


def load_pod(name: str) -> dict[str, Any]:
    pod = yaml.safe_load((DATA / "pods" / name).read_text())
    assert isinstance(pod, dict)
    return pod


def with_annotations(pod: dict[str, Any], values: Mapping[str, str]) -> dict[str, Any]:
    pod = copy.deepcopy(pod)
    pod["metadata"].setdefault("annotations", {}).update(values)
    return pod


def nulled(pod: dict[str, Any]) -> dict[str, Any]:
    """The pod with `volumes: null`, as some clients send it."""
    pod["spec"]["volumes"] = None
    return pod


@dataclass
class Case:
    pod: dict[str, Any]
    values: Mapping[str, str] | None = None  # annotations to parse; None: the pod's own
    settings: Settings = field(default_factory=Settings)

    def injection(self, pod: dict[str, Any] | None = None) -> PodInjection:
        pod = pod if pod is not None else self.pod
        values = self.values
        if values is None:
            values = (pod.get("metadata") or {}).get("annotations") or {}
        parsed = annotations.parse(values, self.settings)
        assert parsed is not None
        return parsed

    def plan(self, pod: dict[str, Any] | None = None) -> list[SpcPlan]:
        pod = pod if pod is not None else self.pod
        req = review.parse_review(orjson.dumps(make_review(pod, namespace="shop")))
        return providers.plan(req, self.injection(pod), self.settings)

    def patch(self, pod: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        pod = pod if pod is not None else self.pod
        return mutation.build_patch(pod, self.injection(pod), self.plan(pod), self.settings)


CUSTOM = Settings(annotation_prefix="secrets.example.com", default_mount_path="/run/secrets")

CASES = {
    "single-container-vault-file": Case(make_pod(ON | VAULT_DB)),
    "vault-env": Case(make_pod(ON | VAULT_ENV)),
    "aws-file": Case(make_pod(ON | AWS_FILE)),
    "aws-env": Case(make_pod(ON | AWS_ENV)),
    "both-backends-env-and-file": Case(
        make_pod(ON | VAULT_DB | VAULT_ENV | AWS_FILE | AWS_ENV, containers=["app", "worker"])
    ),
    "existing-env": Case(
        make_pod(
            ON | VAULT_ENV | AWS_ENV,
            containers=[
                {"name": "app", "image": "app:1", "env": [{"name": "LOG", "value": "debug"}]},
                {"name": "side", "image": "side:1", "env": []},
            ],
        )
    ),
    "existing-volumes-and-mounts": Case(
        make_pod(
            ON | VAULT_DB | AWS_FILE,
            containers=[
                {
                    "name": "app",
                    "image": "app:1",
                    "volumeMounts": [
                        {"name": "cache", "mountPath": "/cache"},
                        {"name": "certs", "mountPath": "/mnt/secrets-other", "readOnly": True},
                        {"name": "base", "mountPath": "/mnt"},
                    ],
                }
            ],
            volumes=[
                {"name": "cache", "emptyDir": {}},
                {"name": "certs", "secret": {"secretName": "certs", "defaultMode": 0o440}},
                {"name": "base", "emptyDir": {}},
            ],
        )
    ),
    "init-containers-untouched-by-default": Case(
        make_pod(ON | VAULT_DB | VAULT_ENV, init_containers=["setup"], containers=["app"])
    ),
    "init-container-named": Case(
        make_pod(
            ON | VAULT_ENV | {PREFIX + "containers": "migrate,app"},
            init_containers=["migrate", "wait"],
            containers=["app", "metrics"],
        )
    ),
    "containers-subset": Case(
        make_pod(ON | AWS_ENV | {PREFIX + "containers": "app"}, containers=["proxy", "app"])
    ),
    "no-annotations-map": Case(make_pod(None), values=ON | VAULT_DB),
    "no-metadata": Case(
        {"apiVersion": "v1", "kind": "Pod", "spec": make_pod()["spec"]}, ON | VAULT_DB
    ),
    "null-lists": Case(
        nulled(
            make_pod(
                ON | VAULT_ENV,
                containers=[{"name": "app", "image": "a:1", "env": None, "volumeMounts": None}],
            )
        )
    ),
    "empty-lists": Case(
        make_pod(
            ON | VAULT_ENV,
            containers=[{"name": "app", "image": "a:1", "env": [], "volumeMounts": []}],
            volumes=[],
        )
    ),
    "custom-prefix-and-mount-path": Case(
        make_pod(
            {
                "secrets.example.com/inject": "true",
                "secrets.example.com/file.db": "vault:secret/data/shop/db#password",
                "secrets.example.com/env.API_KEY": "aws-sm:shop/api#key",
                "secrets.example.com/mount-path": "/var/run/app-secrets",
            }
        ),
        settings=CUSTOM,
    ),
    "status-already-set-spec-copied-without-our-fields": Case(
        make_pod(ON | VAULT_DB | {PREFIX + "status": "injected"})
    ),
    "typical-deployment-pod": Case(
        with_annotations(load_pod("typical.yaml"), ON | VAULT_DB | VAULT_ENV | AWS_ENV)
    ),
    "typical-named-containers": Case(
        with_annotations(
            load_pod("typical.yaml"), ON | AWS_FILE | {PREFIX + "containers": "migrate,api"}
        )
    ),
    "native-sidecar-named": Case(
        with_annotations(
            load_pod("native-sidecar.yaml"),
            ON | VAULT_DB | {PREFIX + "containers": "log-shipper,worker"},
        )
    ),
    "job-env-only": Case(with_annotations(load_pod("job.yaml"), ON | AWS_ENV)),
}


def apply(pod: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    patched = jsonpatch.apply_patch(pod, ops)
    assert isinstance(patched, dict)
    return patched


def validate(pod: dict[str, Any], version: str) -> None:
    try:
        kubernetes_validate.validate(pod, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        pytest.fail(f"Kubernetes {version}: {str(error).splitlines()[0]}")


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_build_patch_gives_a_valid_pod(case: Case, version: str) -> None:
    patched = apply(case.pod, case.patch())
    validate(patched, version)
    # What the API server enforces beyond the schema (list-map keys).
    spec = patched["spec"]
    names = [v["name"] for v in spec["volumes"]]
    assert len(names) == len(set(names))
    for container in spec["containers"] + spec.get("initContainers", []):
        paths = [m["mountPath"] for m in container.get("volumeMounts") or []]
        assert len(paths) == len(set(paths)), container["name"]
        assert {m["name"] for m in container.get("volumeMounts") or []} <= set(names)
        env = [e["name"] for e in container.get("env") or []]
        assert len(env) == len(set(env)), container["name"]


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_build_patch_keeps_every_user_field_in_order(case: Case) -> None:
    original = copy.deepcopy(case.pod)
    patched = apply(case.pod, case.patch())
    assert case.pod == original  # build_patch does not touch its input
    assert_kept(original, patched, "$")


def assert_kept(original: Any, patched: Any, where: str) -> None:
    """`patched` has everything `original` has, lists as prefixes, dicts in key order."""
    if isinstance(original, dict):
        assert isinstance(patched, dict), where
        assert list(patched)[: len(original)] == list(original), where
        for key, value in original.items():
            if value is not None:  # a null list may be replaced by the one we add
                assert_kept(value, patched[key], f"{where}.{key}")
    elif isinstance(original, list):
        assert isinstance(patched, list) and len(patched) >= len(original), where
        for index, item in enumerate(original):
            assert_kept(item, patched[index], f"{where}[{index}]")
    else:
        assert original == patched, where


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_build_patch_only_adds_where_nothing_is(case: Case) -> None:
    """Each op is an add that creates a missing (or null) member or appends to a list."""
    current = copy.deepcopy(case.pod)
    for op in case.patch():
        assert op["op"] == "add"
        assert ALLOWED_PATH.fullmatch(op["path"]), op["path"]
        if not op["path"].endswith("/-"):
            assert jsonpointer.resolve_pointer(current, op["path"], None) is None, op["path"]
        current = apply(current, [op])


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_build_patch_on_its_own_output_is_empty(case: Case) -> None:
    patched = apply(case.pod, case.patch())
    assert case.patch(patched) == []
    # Also after another webhook added fields of its own to what we added.
    for container in patched["spec"]["containers"]:
        for mount in container.get("volumeMounts") or []:
            mount.setdefault("mountPropagation", "None")
    for volume in patched["spec"]["volumes"]:
        if "csi" in volume:
            volume["csi"]["fsType"] = "ext4"
    assert case.patch(patched) == []


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_build_patch_gives_each_receiver_every_volume_and_variable(case: Case) -> None:
    patched = apply(case.pod, case.patch())
    injection = case.injection()
    plan = case.plan()
    spec = patched["spec"]
    everyone = spec["containers"] + spec.get("initContainers", [])
    named = injection.containers
    receivers = named if named is not None else [c["name"] for c in spec["containers"]]
    for container in everyone:
        mounts = container.get("volumeMounts") or []
        env = container.get("env") or []
        ours = [m for m in mounts if m["name"].startswith("secret-injector-")]
        our_env = [e for e in env if "secretKeyRef" in e.get("valueFrom", {})]
        our_env = [
            e
            for e in our_env
            if e["valueFrom"]["secretKeyRef"]["name"].startswith("secret-injector-")
        ]
        if container["name"] not in receivers:
            assert not ours and not our_env, container["name"]
            continue
        assert ours == [mutation.mount_for(spc) for spc in plan]
        assert our_env == [mutation.env_for(spc, var, key) for spc in plan for var, key in spc.env]
    volumes = [v for v in spec["volumes"] if v["name"].startswith("secret-injector-")]
    assert volumes == [mutation.volume_for(spc) for spc in plan]
    marker = case.settings.prefix + "status"
    assert patched["metadata"]["annotations"][marker] == "injected"


def test_build_patch_exact_operations() -> None:
    case = Case(make_pod(ON | VAULT_DB | VAULT_ENV, containers=["app"]))
    (spc,) = case.plan()
    assert case.patch() == [
        {
            "op": "add",
            "path": "/spec/volumes",
            "value": [
                {
                    "name": "secret-injector-vault",
                    "csi": {
                        "driver": "secrets-store.csi.k8s.io",
                        "readOnly": True,
                        "volumeAttributes": {"secretProviderClass": spc.name},
                    },
                }
            ],
        },
        {
            "op": "add",
            "path": "/spec/containers/0/volumeMounts",
            "value": [
                {
                    "name": "secret-injector-vault",
                    "mountPath": "/mnt/secrets/vault",
                    "readOnly": True,
                }
            ],
        },
        {
            "op": "add",
            "path": "/spec/containers/0/env",
            "value": [
                {
                    "name": "DB_PASSWORD",
                    "valueFrom": {"secretKeyRef": {"name": spc.name, "key": "DB_PASSWORD"}},
                }
            ],
        },
        {
            "op": "add",
            "path": "/metadata/annotations/secret-injector.io~1status",
            "value": "injected",
        },
    ]


def test_build_patch_appends_to_existing_lists() -> None:
    pod = make_pod(
        ON | VAULT_ENV,
        containers=[
            {
                "name": "app",
                "image": "app:1",
                "env": [{"name": "A", "value": "1"}],
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            }
        ],
        volumes=[{"name": "tmp", "emptyDir": {}}],
    )
    paths = [op["path"] for op in Case(pod).patch()]
    assert paths == [
        "/spec/volumes/-",
        "/spec/containers/0/volumeMounts/-",
        "/spec/containers/0/env/-",
        "/metadata/annotations/secret-injector.io~1status",
    ]


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        pytest.param(
            ("metadata", "annotations", "secret-injector.io/status"),
            "/metadata/annotations/secret-injector.io~1status",
            id="slash",
        ),
        pytest.param(("a~b",), "/a~0b", id="tilde"),
        pytest.param(("~1",), "/~01", id="tilde-one-is-not-a-slash"),
        pytest.param(("a/~b/",), "/a~1~0b~1", id="both"),
        pytest.param(("spec", "containers", 3, "env", "-"), "/spec/containers/3/env/-", id="index"),
        pytest.param(("",), "/", id="empty-key"),
    ],
)
def test_pointer_escapes_rfc6901(tokens: tuple[str | int, ...], expected: str) -> None:
    assert mutation.pointer(*tokens) == expected
    # and the pointer resolves to what it names
    doc: dict[str, Any] = {}
    last: Any = doc
    for token in tokens[:-1]:
        last = last.setdefault(str(token), {})
    last[str(tokens[-1])] = "here"
    if (
        not isinstance(tokens[-1], int)
        and tokens[-1] != "-"
        and all(isinstance(t, str) for t in tokens)
    ):
        assert jsonpointer.resolve_pointer(doc, expected) == "here"


# -- refusals ----------------------------------------------------------------------------------


def test_build_patch_names_every_missing_container() -> None:
    case = Case(
        make_pod(
            ON | VAULT_DB | {PREFIX + "containers": "app,worker,sidecar"},
            containers=["app"],
            init_containers=["setup"],
        )
    )
    with pytest.raises(AnnotationError) as caught:
        case.patch()
    assert caught.value.lines == (
        'annotation secret-injector.io/containers: the pod has no container named "worker" '
        "(containers: app; init containers: setup)",
        'annotation secret-injector.io/containers: the pod has no container named "sidecar" '
        "(containers: app; init containers: setup)",
    )


def ours(values: Mapping[str, str]) -> tuple[str, str]:
    """The (vault SPC name, aws SPC name) the annotations give in namespace shop."""
    names = {spc.provider: spc.name for spc in Case(make_pod(ON | dict(values))).plan()}
    return names.get("vault", ""), names.get("aws", "")


VAULT_SPC, _ = ours(VAULT_DB | VAULT_ENV)

CONFLICTS = {
    "env-var-exists": (
        make_pod(
            ON | VAULT_ENV,
            containers=[
                {"name": "app", "image": "a:1", "env": [{"name": "DB_PASSWORD", "value": "x"}]}
            ],
        ),
        [
            'container "app" already has env var "DB_PASSWORD" (remove it or choose another '
            "name in the env. annotation; secret-injector never overwrites one)"
        ],
    ),
    "env-var-from-another-secret": (
        make_pod(
            ON | VAULT_ENV | {PREFIX + "containers": "migrate"},
            init_containers=[
                {
                    "name": "migrate",
                    "image": "m:1",
                    "env": [
                        {
                            "name": "DB_PASSWORD",
                            "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}},
                        }
                    ],
                }
            ],
        ),
        [
            'init container "migrate" already has env var "DB_PASSWORD" (remove it or choose '
            "another name in the env. annotation; secret-injector never overwrites one)"
        ],
    ),
    "volume-name-taken": (
        make_pod(ON | VAULT_DB, volumes=[{"name": "secret-injector-vault", "emptyDir": {}}]),
        [
            'volume "secret-injector-vault" already exists and is not the Secrets Store CSI volume '
            "secret-injector adds (remove or rename that volume; secret-injector adds its own)"
        ],
    ),
    "stale-volume-from-a-copied-pod": (
        make_pod(
            ON | VAULT_DB | VAULT_ENV,
            volumes=[
                {
                    "name": "secret-injector-vault",
                    "csi": {
                        "driver": "secrets-store.csi.k8s.io",
                        "readOnly": True,
                        "volumeAttributes": {
                            "secretProviderClass": "secret-injector-vault-0000000000"
                        },
                    },
                }
            ],
        ),
        [
            'volume "secret-injector-vault" uses SecretProviderClass '
            f'"secret-injector-vault-0000000000", but the annotations need {VAULT_SPC} (remove '
            "or rename that volume; secret-injector adds its own)"
        ],
    ),
    "mount-path-taken": (
        make_pod(
            ON | VAULT_DB,
            containers=[
                {
                    "name": "app",
                    "image": "a:1",
                    "volumeMounts": [{"name": "data", "mountPath": "/mnt/secrets/vault/"}],
                }
            ],
            volumes=[{"name": "data", "emptyDir": {}}],
        ),
        [
            'container "app" already mounts volume "data" at /mnt/secrets/vault, where '
            "secret-injector mounts the vault secrets (move that mount or choose another "
            "mount-path annotation)"
        ],
    ),
    "mount-inside-ours": (
        make_pod(
            ON | AWS_FILE,
            containers=[
                {
                    "name": "app",
                    "image": "a:1",
                    "volumeMounts": [{"name": "data", "mountPath": "/mnt/secrets/aws/x"}],
                }
            ],
            volumes=[{"name": "data", "emptyDir": {}}],
        ),
        [
            'container "app" already mounts volume "data" inside /mnt/secrets/aws, where '
            "secret-injector mounts the aws secrets (move that mount or choose another "
            "mount-path annotation)"
        ],
    ),
    "our-volume-mounted-elsewhere": (
        make_pod(
            ON | VAULT_DB | VAULT_ENV,
            containers=[
                {
                    "name": "app",
                    "image": "a:1",
                    "volumeMounts": [{"name": "secret-injector-vault", "mountPath": "/vault"}],
                }
            ],
            volumes=[
                {
                    "name": "secret-injector-vault",
                    "csi": {
                        "driver": "secrets-store.csi.k8s.io",
                        "readOnly": True,
                        "volumeAttributes": {"secretProviderClass": VAULT_SPC},
                    },
                }
            ],
        ),
        [
            'container "app" mounts volume "secret-injector-vault" at "/vault", not read-only '
            "at /mnt/secrets/vault as secret-injector does (remove that mount; secret-injector "
            "adds its own)"
        ],
    ),
    "every-conflict-at-once": (
        make_pod(
            ON | VAULT_ENV | AWS_ENV,
            containers=[
                {"name": "a", "image": "a:1", "env": [{"name": "DB_PASSWORD", "value": "x"}]},
                {"name": "b", "image": "b:1", "env": [{"name": "FLAG", "value": "on"}]},
            ],
            volumes=[{"name": "secret-injector-aws", "emptyDir": {}}],
        ),
        [
            'volume "secret-injector-aws" already exists and is not the Secrets Store CSI volume '
            "secret-injector adds (remove or rename that volume; secret-injector adds its own)",
            'container "a" already has env var "DB_PASSWORD" (remove it or choose another name in '
            "the env. annotation; secret-injector never overwrites one)",
            'container "b" already has env var "FLAG" (remove it or choose another name in the '
            "env. annotation; secret-injector never overwrites one)",
        ],
    ),
}


@pytest.mark.parametrize(("pod", "expected"), CONFLICTS.values(), ids=CONFLICTS.keys())
def test_build_patch_refuses_to_clobber(pod: dict[str, Any], expected: list[str]) -> None:
    with pytest.raises(ConflictError) as caught:
        Case(pod).patch()
    assert list(caught.value.lines) == expected


# -- through the pipeline ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [CASES["both-backends-env-and-file"], CASES["typical-deployment-pod"]],
    ids=["both-backends", "typical"],
)
async def test_admit_then_validate_round_trip(case: Case) -> None:
    """/mutate patches, a reinvocation on the patched pod adds nothing, /validate allows it."""
    context = pipeline.Context(settings=SETTINGS, policy=policy.Policy())

    def request(pod: dict[str, Any]) -> review.AdmissionRequest:
        return review.parse_review(orjson.dumps(make_review(pod, namespace="shop")))

    first = await pipeline.admit(request(case.pod), context)
    assert first.outcome == "injected"
    assert [spc["metadata"]["name"] for spc in first.spcs] == [spc.name for spc in case.plan()]
    patched = apply(case.pod, first.patch)
    again = await pipeline.admit(request(patched), context)
    assert (again.outcome, again.patch) == ("allowed", [])
    assert (await pipeline.validate(request(patched), context)).allowed
    unpatched = await pipeline.validate(request(case.pod), context)
    assert unpatched.denial is not None and unpatched.denial.lines[0].startswith("injection: ")
