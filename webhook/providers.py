"""SecretProviderClass objects for the vault and aws CSI providers. No I/O.

One SecretProviderClass (SPC) per CSI provider the pod uses (`vault` for vault:, `aws` for
aws-sm: and aws-ssm:), in the pod's namespace, named by a hash of its content: the same
annotations give the same SPC, which pods then share. Each SPC becomes one CSI volume
mounted at `<mount-path>/<provider>`, so `file.<name>` is always the file
`<mount-path>/<provider>/<name>`, whatever the other annotations say.

`env.<NAME>` needs a file too: the CSI driver fills the synced Secret from the files of the
mount (secrets-store-csi-driver pkg/secretutil GetSecretData looks `objectName` up among the
mounted files). A reference that is also delivered as a file shares that file; otherwise
the value lands in a hidden file `.secret-injector.env.<NAME>` (names starting with
`.secret-injector` are reserved: annotations.RESERVED_FILE_PREFIX). The synced Secret is
named after the SPC, with one key per variable.

Parameters follow what the providers read:
- hashicorp/vault-csi-provider internal/config/config.go parseParameters: `roleName`,
  `vaultAddress`, `vaultNamespace`, `vaultKubernetesMountPath`, and `objects`, a YAML list of
  {objectName, secretPath, secretKey}; objectNames must be unique within an SPC (validate()).
  A KV v2 version is pinned with a query on secretPath, `secret/data/app/db?version=3`:
  internal/client/client.go generateSecretRequest splits secretPath at '?' and sends the
  query parameters with the read.
- aws/secrets-store-csi-driver-provider-aws provider/secret_descriptor.go SecretDescriptor:
  `objectName`, `objectType` (secretsmanager | ssmparameter), `objectAlias` (the file name),
  `objectVersion` (version id), `objectVersionLabel` (stage), `jmesPath` [{path,
  objectAlias}]; server/server.go reads `region`, `usePodIdentity` (EKS Pod Identity
  instead of IRSA) and `objects`. The provider always writes the whole secret under
  objectAlias and each jmesPath result under its own alias
  (provider/secrets_manager_provider.go fetchSecretManagerValueWithClient); aliases must be
  unique (NewSecretDescriptorList), and SSM parameters are batched by name
  (provider/parameter_store_provider.go), so one parameter fills one file. All keys of one
  secret version hang off one entry as jmesPath items (one GetSecretValue), the whole
  secret taking a user's file name or a hidden one. JSON keys are written as JMESPath
  quoted identifiers (`"db-password"`), which take any key literally.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass, field
from typing import Any

from webhook.annotations import RESERVED_FILE_PREFIX, arn_region_of
from webhook.refs import (
    AwsParameterRef,
    AwsSecretRef,
    Injection,
    PodInjection,
    Provider,
    SecretRef,
    VaultRef,
)
from webhook.review import AdmissionRequest
from webhook.settings import Settings

API_VERSION = "secrets-store.csi.x-k8s.io/v1"
KIND = "SecretProviderClass"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "secret-injector"
NAME_PREFIX = "secret-injector-"  # SPCs, synced Secrets and pod volumes we add
ENV_FILE_PREFIX = RESERVED_FILE_PREFIX + ".env."
SECRET_FILE_PREFIX = RESERVED_FILE_PREFIX + ".secret."
HASH_LENGTH = 10


@dataclass(frozen=True, slots=True)
class SpcPlan:
    """One SecretProviderClass and how the pod uses it."""

    provider: Provider
    name: str  # content-addressed: same annotations, same name
    body: dict[str, Any]  # the SecretProviderClass object
    volume_name: str
    mount_path: str
    env: tuple[tuple[str, str], ...]  # (ENV_NAME, key in the synced Secret named `name`)


def plan(req: AdmissionRequest, pod: PodInjection, settings: Settings) -> list[SpcPlan]:
    """The SPCs an opted-in pod needs, one per CSI provider, in a stable order."""
    plans = []
    for provider in pod.providers:
        layout = _layout([i for i in pod.injections if i.ref.provider == provider])
        if provider == "vault":
            parameters = _vault_parameters(req, pod, settings, layout)
        else:
            parameters = _aws_parameters(pod, settings, layout)
        plans.append(_spc(req.namespace, provider, parameters, layout, pod.mount_path))
    return plans


def file_path(pod: PodInjection, injection: Injection) -> str:
    """Where the file of a `file.<name>` annotation appears in the receiving containers."""
    return posixpath.join(pod.mount_path, injection.ref.provider, injection.target)


def vault_role(req: AdmissionRequest, pod: PodInjection, settings: Settings) -> str:
    """The `vault-role` annotation, else the configured default with its placeholders filled."""
    if pod.vault_role is not None:
        return pod.vault_role
    template = settings.providers.vault.default_role
    return template.replace("{namespace}", req.namespace).replace(
        "{serviceAccount}", req.service_account
    )


def aws_region(pod: PodInjection, settings: Settings) -> str | None:
    """The region AWS secrets mount from: annotation, config, else the region of the ARNs.

    None leaves it to the provider (the node's topology.kubernetes.io/region label).
    annotations.parse has already refused ARNs that disagree with this region or each other.
    """
    if pod.aws_region is not None:
        return pod.aws_region
    if settings.providers.aws.region is not None:
        return settings.providers.aws.region
    regions = [r for i in pod.injections if (r := arn_region_of(i.ref)) is not None]
    return regions[0] if regions else None


@dataclass(slots=True)
class _Layout:
    """The files of one provider's mount, and which file backs each env var."""

    files: list[tuple[str, SecretRef]] = field(default_factory=list)  # (file name, ref)
    env: list[tuple[str, str]] = field(default_factory=list)  # (ENV_NAME, file name)


def _layout(injections: list[Injection]) -> _Layout:
    layout = _Layout()
    backing: dict[SecretRef, str] = {}  # the first file that holds each reference
    for injection in injections:
        if injection.delivery == "file":
            layout.files.append((injection.target, injection.ref))
            backing.setdefault(injection.ref, injection.target)
    for injection in injections:
        if injection.delivery == "env":
            name = backing.get(injection.ref)
            if name is None:
                name = backing[injection.ref] = ENV_FILE_PREFIX + injection.target
                layout.files.append((name, injection.ref))
            layout.env.append((injection.target, name))
    return layout


def _vault_parameters(
    req: AdmissionRequest, pod: PodInjection, settings: Settings, layout: _Layout
) -> dict[str, str]:
    vault = settings.providers.vault
    objects = []
    for name, ref in layout.files:
        assert isinstance(ref, VaultRef)
        path = ref.path if ref.version is None else f"{ref.path}?version={ref.version}"
        objects.append({"objectName": name, "secretPath": path, "secretKey": ref.key})
    parameters = {"roleName": vault_role(req, pod, settings)}
    if vault.address:  # else the provider's -vault-addr flag / VAULT_ADDR
        parameters["vaultAddress"] = vault.address
    parameters["vaultKubernetesMountPath"] = vault.auth_mount_path
    if vault.namespace:
        parameters["vaultNamespace"] = vault.namespace
    parameters["objects"] = objects_yaml(objects)
    return parameters


@dataclass(slots=True)
class _SecretVersion:
    """The files one Secrets Manager secret version fills: whole, and per JSON key."""

    whole: list[str] = field(default_factory=list)
    keys: list[tuple[str, str]] = field(default_factory=list)  # (json key, file name)


def _aws_parameters(pod: PodInjection, settings: Settings, layout: _Layout) -> dict[str, str]:
    secrets: dict[tuple[str, str | None, str | None], _SecretVersion] = {}
    parameters_files: list[tuple[str, AwsParameterRef]] = []
    for name, ref in layout.files:
        if isinstance(ref, AwsSecretRef):
            version = secrets.setdefault(
                (ref.name, ref.version_stage, ref.version_id), _SecretVersion()
            )
            if ref.json_key is None:
                version.whole.append(name)
            else:
                version.keys.append((ref.json_key, name))
        else:
            assert isinstance(ref, AwsParameterRef)
            parameters_files.append((name, ref))
    objects: list[dict[str, Any]] = []
    for (secret, stage, version_id), version in secrets.items():
        base: dict[str, Any] = {"objectName": secret, "objectType": "secretsmanager"}
        if stage is not None:
            base["objectVersionLabel"] = stage
        if version_id is not None:
            base["objectVersion"] = version_id
        if version.whole:
            alias = version.whole[0]
        else:  # only keys asked for: the provider still writes the whole secret somewhere
            alias = SECRET_FILE_PREFIX + _digest([secret, stage, version_id])[:HASH_LENGTH]
        entry = {**base, "objectAlias": alias}
        if version.keys:
            entry["jmesPath"] = [
                {"path": json.dumps(key), "objectAlias": name} for key, name in version.keys
            ]
        objects.append(entry)
        objects += [{**base, "objectAlias": name} for name in version.whole[1:]]
    for name, parameter in parameters_files:
        objects.append(
            {"objectName": parameter.name, "objectType": "ssmparameter", "objectAlias": name}
        )
    parameters: dict[str, str] = {}
    region = aws_region(pod, settings)
    if region is not None:
        parameters["region"] = region
    if settings.providers.aws.use_pod_identity:  # else the provider uses IRSA
        parameters["usePodIdentity"] = "true"
    parameters["objects"] = objects_yaml(objects)
    return parameters


def _spc(
    namespace: str,
    provider: Provider,
    parameters: dict[str, str],
    layout: _Layout,
    mount_path: str,
) -> SpcPlan:
    env = sorted(layout.env)
    name = f"{NAME_PREFIX}{provider}-{_digest([provider, parameters, env])[:HASH_LENGTH]}"
    labels = {MANAGED_BY_LABEL: MANAGED_BY}
    spec: dict[str, Any] = {"provider": provider, "parameters": parameters}
    if env:
        spec["secretObjects"] = [
            {
                "secretName": name,
                "type": "Opaque",
                "labels": dict(labels),
                "data": [{"objectName": file, "key": var} for var, file in env],
            }
        ]
    body = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": spec,
    }
    return SpcPlan(
        provider=provider,
        name=name,
        body=body,
        volume_name=NAME_PREFIX + provider,
        mount_path=posixpath.join(mount_path, provider),
        env=tuple((var, var) for var, _ in env),
    )


def objects_yaml(objects: list[dict[str, Any]]) -> str:
    """The `objects` parameter: a YAML list in a string (SPC parameters are all strings).

    Written by hand: PyYAML's emitter costs about half a millisecond per SPC, most of a
    review's CPU. Block style for people reading the SPC, every scalar double-quoted and
    ASCII-only (a round trip is tested). Values are strings, or a list of string maps
    (jmesPath).
    """
    lines = []
    for entry in objects:
        lead = "- "
        for key, value in entry.items():
            if isinstance(value, str):
                lines.append(f"{lead}{key}: {_quote(value)}")
            elif not value:
                lines.append(f"{lead}{key}: []")
            else:
                lines.append(f"{lead}{key}:")
                for item in value:
                    inner = "  - "
                    for item_key, item_value in item.items():
                        lines.append(f"{inner}{item_key}: {_quote(item_value)}")
                        inner = "    "
            lead = "  "
    return "\n".join(lines) + "\n" if lines else "[]\n"


def _quote(text: str) -> str:
    """A YAML double-quoted scalar: `\\x`, `\\u`, `\\U` escapes name code points (not UTF-16)."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    out = []
    for char in text:
        code = ord(char)
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def _digest(content: Any) -> str:
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
