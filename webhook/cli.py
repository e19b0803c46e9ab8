"""The command line: serve, explain, certs, check-config.

Exit codes: 0 success; 1 a pod denied (`explain`) or an invalid file (`check-config`,
`serve`); 2 a usage error or an unreadable input.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import orjson
import yaml

from webhook import __version__, certs, logs, pipeline, policy_file, review, workload
from webhook.errors import ConfigError, ReviewError, WebhookError
from webhook.metrics import Metrics
from webhook.settings import Settings

if TYPE_CHECKING:
    from webhook.handlers import Step

# `serve` and `explain` import the server modules when they run: `certs`, `check-config`
# and `--help` stay quick.

log = logging.getLogger("secret_injector.cli")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `secret-injector` and `python -m webhook`."""
    args = _parser().parse_args(argv)
    command: str = args.command
    try:
        if command == "serve":
            return _serve(args.config)
        if command == "explain":
            return _explain(args.file, args.namespace, args.config, sys.stdout, sys.stderr)
        if command == "certs":
            return _certs(args.out, args.service, args.namespace, args.force)
        if args.config is None and args.policy is None:
            _parser().error("check-config needs --config FILE, --policy FILE, or both")
        return _check_config(args.config, args.policy)
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="secret-injector",
        description="Kubernetes admission webhook that injects secrets from Vault/OpenBao, "
        "AWS Secrets Manager and SSM Parameter Store through the Secrets Store CSI driver.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the webhook (TLS) and its metrics endpoint")
    serve.add_argument("--config", metavar="FILE", help="config file (default: built-in defaults)")

    explain = sub.add_parser(
        "explain",
        help="show offline what the webhook would do to a Pod or workload",
        description="Run a Pod, or the pod template of a Deployment, StatefulSet, DaemonSet, "
        "ReplicaSet, Job or CronJob, through the same admission pipeline as `serve` (with "
        "backend verification as configured, no Kubernetes API writes). Prints the patched "
        "objects and the SecretProviderClasses as a YAML stream on stdout; warnings, or the "
        "denial (exit 1), on stderr.",
    )
    explain.add_argument(
        "-f", "--file", required=True, metavar="FILE", help="YAML manifest(s); - for stdin"
    )
    explain.add_argument("-n", "--namespace", metavar="NS", help="namespace of the pod")
    explain.add_argument("--config", metavar="FILE", help="config file, as given to `serve`")

    cert = sub.add_parser(
        "certs",
        help="make a development CA and serving certificate",
        description="Write ca.crt, ca.key, tls.crt and tls.key (ECDSA P-256) under --out. The "
        "serving certificate names the Service (svc, svc.ns, svc.ns.svc, "
        "svc.ns.svc.cluster.local), localhost and 127.0.0.1. An existing CA is kept; "
        "for development and tests only.",
    )
    cert.add_argument("--out", required=True, metavar="DIR", help="output directory")
    cert.add_argument("--service", default="secret-injector", help="Service name")
    cert.add_argument("--namespace", default="secret-injector", help="Service namespace")
    cert.add_argument("--force", action="store_true", help="start over with a new CA")

    check = sub.add_parser(
        "check-config",
        help="validate config and policy files with precise errors",
        description="Validate a config file and the policy file it names (or --policy). "
        "Errors name the file, line and key; exit 1 when a file is invalid.",
    )
    check.add_argument("--config", metavar="FILE", help="config file")
    check.add_argument("--policy", metavar="FILE", help="policy file (default: policyFile)")
    return parser


def _load_settings(path: str | None) -> Settings:
    if path is None:
        return Settings().with_environment(os.environ)
    return Settings.load(path)


def _run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run on uvloop where it is installed (faster TLS and HTTP), else asyncio."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - every supported platform has it
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def _serve(config: str | None) -> int:
    try:
        settings = _load_settings(config)
    except ConfigError as exc:
        print(f"secret-injector: {exc}", file=sys.stderr)
        return EXIT_FAILED
    logs.configure(settings.logging.level)
    from webhook import app

    try:
        _run(app.serve(settings))
    except (ConfigError, WebhookError) as exc:  # TLS or policy files, self-managed CA
        print(f"secret-injector: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        listen = settings.listen
        print(
            f"secret-injector: cannot listen on {listen.address}:{listen.port} or "
            f"{listen.metrics_address}:{listen.metrics_port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK


def _certs(out: str, service: str, namespace: str, force: bool) -> int:
    try:
        files, written = certs.write_dev_certs(out, service, namespace, force=force)
    except OSError as exc:
        print(f"secret-injector: cannot write certificates under {out}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    state = "written" if written else "up to date"
    names = ", ".join(certs.service_names(service, namespace))
    print(
        f"{out}: {state}: CA {files.ca_cert}, serving certificate {files.cert} "
        f"(key {files.key}) for {names}, 127.0.0.1"
    )
    return EXIT_OK


def _check_config(config: str | None, policy: str | None) -> int:
    policy_path = policy
    if config is not None:
        try:
            settings = Settings.load(config)
        except ConfigError as exc:
            print(f"secret-injector: {exc}", file=sys.stderr)
            return EXIT_FAILED
        print(f"{config}: ok")
        policy_path = policy or settings.policy_file
    if policy_path is not None:
        try:
            policy_file.load(policy_path)
        except ConfigError as exc:
            print(f"secret-injector: {exc}", file=sys.stderr)
            return EXIT_FAILED
        print(f"{policy_path}: ok")
    return EXIT_OK


def _explain(file: str, namespace: str | None, config: str | None, out: TextIO, err: TextIO) -> int:
    try:
        settings = _load_settings(config)
    except ConfigError as exc:
        print(f"secret-injector: {exc}", file=err)
        return EXIT_USAGE
    try:
        documents = _read_manifests(file)
    except ValueError as exc:
        print(f"secret-injector: {exc}", file=err)
        return EXIT_USAGE
    # stdout is the YAML stream: logs go to stderr, and only problems unless asked for debug.
    level: logs.Level = "debug" if settings.logging.level == "debug" else "warning"
    logs.configure(level, err, structured=False)
    try:
        report = _run(_explain_documents(documents, namespace, settings, err))
    except ConfigError as exc:  # the policy file named in the config
        print(f"secret-injector: {exc}", file=err)
        return EXIT_USAGE
    assert isinstance(report, Explained)
    if report.objects or report.spcs:
        out.write(workload.dump([*report.objects, *report.spcs]))
    return report.exit_code


@dataclass(slots=True)
class Explained:
    """What `explain` prints: the objects (patched or not), the SPCs, and how it ended."""

    objects: list[dict[str, Any]] = field(default_factory=list)
    spcs: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int = EXIT_OK


async def _explain_documents(
    documents: list[dict[str, Any]], namespace: str | None, settings: Settings, err: TextIO
) -> Explained:
    from webhook import app

    report = Explained()
    seen_spcs: set[str] = set()
    async with app.open_context(settings, Metrics(), serving=False) as ctx:
        for document in documents:
            name = workload.label(document)
            ns = namespace or _namespace_of(document)
            try:
                outcome = await _explain_one(document, ns, ctx)
            except (ReviewError, workload.ManifestError) as exc:
                # A ManifestError names the object itself.
                if isinstance(exc, ReviewError):  # its paths start at the review's object
                    text = f"{name}: {exc.reason.replace('request.object.', '')}"
                else:
                    text = str(exc)
                print(f"error: {text}", file=err)
                report.exit_code = max(report.exit_code, EXIT_USAGE)
                continue
            if outcome is None:
                print(
                    f"note: {name}: not a Pod or a workload with a pod template, printed unchanged",
                    file=err,
                )
                report.objects.append(document)
                continue
            decision, patched = outcome
            for warning in decision.warnings:
                print(f"warning: {name}: {warning}", file=err)
            if decision.denial is not None:
                denial = decision.denial
                print(f"denied: {name} ({denial.code} {denial.reason}):", file=err)
                for line in denial.lines:
                    print(f"  {line}", file=err)
                report.exit_code = max(report.exit_code, EXIT_FAILED)
                continue
            if decision.outcome == "skipped":
                print(
                    f'note: {name}: not opted in ({settings.prefix}inject is not "true"), '
                    "unchanged",
                    file=err,
                )
            report.objects.append(patched)
            for spc in decision.spcs:
                spc_name = str(spc.get("metadata", {}).get("name"))
                if spc_name not in seen_spcs:
                    seen_spcs.add(spc_name)
                    report.spcs.append(spc)
    return report


async def _explain_one(
    document: dict[str, Any], namespace: str, ctx: pipeline.Context
) -> tuple[pipeline.Decision, dict[str, Any]] | None:
    """Mutate as `serve` would, then validate the result as the API server would next."""
    pod = workload.pod_for(document, namespace)
    if pod is None:
        return None
    user = "secret-injector-explain"
    req = review.parse_review(orjson.dumps(workload.admission_review(pod, namespace, user)))
    decision = await _decide(pipeline.admit, req, ctx)
    if decision.denial is not None:
        return decision, document
    patched_pod = workload.apply_patch(pod, decision.patch)
    final = review.parse_review(
        orjson.dumps(workload.admission_review(patched_pod, namespace, user))
    )
    checked = await _decide(pipeline.validate, final, ctx)
    decision.warnings += [w for w in checked.warnings if w not in decision.warnings]
    if checked.denial is not None:
        decision.denial = checked.denial
        decision.outcome = "denied"
        return decision, document
    return decision, workload.apply_patch(document, decision.patch)


async def _decide(
    step: Step, req: review.AdmissionRequest, ctx: pipeline.Context
) -> pipeline.Decision:
    """As `serve` answers: an internal bug denies with code 500 and logs the traceback."""
    try:
        return await step(req, ctx)
    except ReviewError:
        raise  # the pod is malformed: reported as such by the caller
    except Exception:
        from webhook.handlers import InternalError

        log.exception("internal error while explaining", extra={"pod": req.name})
        error = InternalError(
            "secret-injector internal error (the traceback is logged above); please report it"
        )
        return pipeline.Decision(outcome="denied", denial=error)


def _namespace_of(document: dict[str, Any]) -> str:
    metadata = document.get("metadata")
    namespace = metadata.get("namespace") if isinstance(metadata, dict) else None
    return namespace if isinstance(namespace, str) and namespace else "default"


def _read_manifests(file: str) -> list[dict[str, Any]]:
    """Every non-empty document of a YAML stream; raises ValueError naming the problem."""
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{file}: cannot read: {exc}") from None
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ValueError(f"{file}: not valid YAML: {exc}") from None
    objects: list[dict[str, Any]] = []
    for index, document in enumerate(documents):
        if isinstance(document, dict) and document.get("kind") == "List":
            items = document.get("items")
            candidates = items if isinstance(items, list) else [items]
        else:
            candidates = [document]
        for candidate in candidates:
            if not isinstance(candidate, dict) or not isinstance(candidate.get("kind"), str):
                raise ValueError(f"{file}: document {index + 1} is not a Kubernetes object")
            objects.append(candidate)
    if not objects:
        raise ValueError(f"{file}: no Kubernetes objects in the file")
    return objects
