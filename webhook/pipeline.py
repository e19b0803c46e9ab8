"""The admission pipeline: the one place that knows the order of the steps.

    /mutate    parse -> refs -> policy -> verify -> plan SPCs -> patch -> (create SPCs) -> respond
    /validate  parse -> refs -> policy (on the final pod) -> injected-marker guard -> respond

Policy runs before verification, so a namespace cannot probe secrets it may not use.
Every step but verification and SPC creation is pure; those two await through the seams
in `Context` (None when the deployment has no backend or no Kubernetes API). On /mutate the
pure steps (refs, policy, plan, patch) are computed once per pod template and reused for
its other pods (webhook/decisions.py); verification and SPC creation run for every pod.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from webhook import annotations, decisions, mutation, policy, providers, review
from webhook.decisions import DecisionCache
from webhook.errors import PolicyError, WebhookError
from webhook.metrics import Metrics
from webhook.refs import PodInjection
from webhook.review import AdmissionRequest, PatchOp
from webhook.settings import Settings

Outcome = Literal["skipped", "injected", "allowed", "warned", "denied"]
Stage = Literal["mutate", "validate"]


class Verifier(Protocol):
    """Checks that references exist (metadata only). See webhook/verification.py."""

    async def verify(self, req: AdmissionRequest, pod: PodInjection) -> list[str]:
        """Warnings to return; raises SecretNotFoundError / BackendUnavailableError to deny."""
        ...


class SpcStore(Protocol):
    """Creates SecretProviderClasses if absent. See webhook/kube.py."""

    async def ensure(
        self,
        namespace: str,
        spcs: Sequence[dict[str, Any]],
        owner: Mapping[str, Any] | None = None,
    ) -> None:
        """`owner`: the pod's controller (ownerReference), made an owner of the SPCs so the
        cluster's garbage collector deletes them with their last user."""
        ...


@dataclass(slots=True)
class Context:
    """What one review needs besides the request; built once per app."""

    settings: Settings
    policy: policy.Policy
    verifier: Verifier | None = None
    spc_store: SpcStore | None = None
    metrics: Metrics | None = None  # counts policy violations when set
    # The pure part of /mutate decisions by pod template (None: every review runs it all).
    decisions: DecisionCache | None = None


@dataclass(slots=True)
class Decision:
    """The answer to one review, and what the audit line reports about it."""

    outcome: Outcome
    patch: list[PatchOp] = field(default_factory=list)
    encoded_patch: str = ""  # review.encode_patch(patch), when the template had it
    warnings: list[str] = field(default_factory=list)
    denial: WebhookError | None = None
    spcs: list[dict[str, Any]] = field(default_factory=list)
    references: list[str] = field(default_factory=list)  # scheme:path, never a value
    violations: list[str] = field(default_factory=list)
    cached: bool = False  # policy, SPCs and patch came from the decision cache

    @property
    def allowed(self) -> bool:
        return self.denial is None


def _skip() -> Decision:
    return Decision(outcome="skipped")


def _forgotten_opt_in(req: AdmissionRequest, settings: Settings) -> Decision:
    """Skip a pod that is not opted in, warning when it carries our keys without `inject`:
    annotations that silently do nothing are the commonest mistake with injectors."""
    ignored = annotations.ignored_keys(req.annotations, settings)
    if not ignored:
        return _skip()
    inject = settings.prefix + "inject"
    count = f"{len(ignored)} annotation" + ("s" if len(ignored) > 1 else "")
    return Decision(
        outcome="warned",
        warnings=[
            f'{inject} is not set: {count} under {settings.prefix} ignored (set it to "true")'
        ],
    )


def _deny(error: WebhookError, decision: Decision) -> Decision:
    decision.outcome = "denied"
    decision.denial = error
    decision.patch = []
    decision.encoded_patch = ""
    return decision


async def admit(req: AdmissionRequest, ctx: Context) -> Decision:
    """Answer a /mutate review; raises ReviewError for an opted-in pod that is malformed."""
    # A pod's volumes and env are immutable after creation: CREATE is where we act.
    if not req.is_pod or req.operation != "CREATE" or req.is_mirror:
        return _skip()
    assert req.spec_json  # parse_review keeps the spec of every Pod CREATE
    if not _is_opted_in(req, ctx.settings):
        return _forgotten_opt_in(req, ctx.settings)
    template, cached = _template(req, ctx)
    decision = Decision(
        outcome="allowed",
        cached=cached,
        references=list(template.references),
        violations=[v.line for v in template.violations],
        warnings=[v.line for v in template.violations if v.action == "warn"],
    )
    if ctx.metrics is not None:
        for v in template.violations:
            ctx.metrics.violations.labels(v.rule, v.action).inc()
    # A cached denial is returned, not raised: raising would hang this review's frames
    # (and its pod) on the shared exception.
    if template.denial is not None:
        return _deny(template.denial, decision)
    assert template.pod is not None
    try:
        if ctx.verifier is not None:
            decision.warnings += await ctx.verifier.verify(req, template.pod)
    except WebhookError as error:
        return _deny(error, decision)
    if template.plan_denial is not None:
        return _deny(template.plan_denial, decision)
    decision.spcs = list(template.spcs)
    decision.patch = list(template.patch)
    decision.encoded_patch = template.encoded_patch
    try:
        if decision.patch and ctx.spc_store is not None and not req.dry_run:
            await ctx.spc_store.ensure(
                req.namespace, decision.spcs, _controller(req.owner_references)
            )
    except WebhookError as error:
        return _deny(error, decision)
    if decision.patch:
        decision.outcome = "injected"
    else:
        decision.outcome = "warned" if decision.warnings else "allowed"
    return decision


def _is_opted_in(req: AdmissionRequest, settings: Settings) -> bool:
    """As annotations.parse decides (no `inject`, or "false": not opted in), without parsing."""
    return req.annotations.get(settings.prefix + "inject", "false") != "false"


def _template(req: AdmissionRequest, ctx: Context) -> tuple[decisions.Template, bool]:
    """The pure part of the decision, and whether it came from the decision cache (else it
    is computed, and kept)."""
    cache = ctx.decisions
    if cache is None or not cache.enabled:
        return _plan(req, ctx), False
    key = decisions.key(req)
    policy_in_force = ctx.policy  # a reload during this review must not file under it
    template = cache.get(key, policy_in_force)
    if template is not None:
        return template, True
    template = _plan(req, ctx)
    cache.put(key, policy_in_force, template)
    return template, False


def _plan(req: AdmissionRequest, ctx: Context) -> decisions.Template:
    """Annotations -> policy -> SPCs and patch, for an opted-in pod; denials are kept in
    the template (without their traceback, which would keep this pod alive in the cache)."""
    assert req.pod is not None
    review.check_pod_shape(req.pod)  # ReviewError: HTTP 400, and nothing is cached
    try:
        pod = annotations.parse(req.annotations, ctx.settings)
    except WebhookError as error:
        return decisions.Template(pod=None, denial=error.with_traceback(None))
    assert pod is not None  # _is_opted_in said so
    references = tuple(str(i.ref) for i in pod.injections)
    violations = tuple(policy.check(req, pod, ctx.policy, "mutate"))
    denials = [v.line for v in violations if v.action == "deny"]
    if denials:
        return decisions.Template(pod, references, violations, denial=PolicyError(denials))
    try:
        plan = providers.plan(req, pod, ctx.settings)
        patch = mutation.build_patch(req.pod, pod, plan, ctx.settings)
    except WebhookError as error:
        return decisions.Template(
            pod, references, violations, plan_denial=error.with_traceback(None)
        )
    return decisions.Template(
        pod,
        references,
        violations,
        spcs=tuple(p.body for p in plan),
        patch=tuple(patch),
        encoded_patch=review.encode_patch(patch) if patch else "",
    )


async def validate(req: AdmissionRequest, ctx: Context) -> Decision:
    """Answer a /validate review: policy on the final pod, and the injected-marker guard;
    raises ReviewError for a malformed pod."""
    if not req.is_pod or req.operation != "CREATE" or req.is_mirror:
        return _skip()
    assert req.pod is not None
    review.check_pod_shape(req.pod)  # ReviewError: HTTP 400
    decision = Decision(outcome="allowed")
    try:
        pod = annotations.parse(req.annotations, ctx.settings)
        if pod is None:
            _apply_policy(req, None, ctx, "validate", decision)
        else:
            decision.references = [str(i.ref) for i in pod.injections]
            _apply_policy(req, pod, ctx, "validate", decision)
            annotations.check_injected(req.annotations, ctx.settings)
    except WebhookError as error:
        return _deny(error, decision)
    decision.outcome = "warned" if decision.warnings else "allowed"
    return decision


def _controller(owner_references: Any) -> dict[str, Any] | None:
    """The pod's controlling ownerReference (ReplicaSet, Job, ...), when it is complete."""
    for ref in owner_references if isinstance(owner_references, list) else ():
        if isinstance(ref, dict) and ref.get("controller") is True:
            fields = {k: ref.get(k) for k in ("apiVersion", "kind", "name", "uid")}
            if all(isinstance(v, str) and v for v in fields.values()):
                return fields
    return None


def _apply_policy(
    req: AdmissionRequest, pod: PodInjection | None, ctx: Context, stage: Stage, decision: Decision
) -> None:
    """Run the policy; warnings join the decision, denials raise one PolicyError."""
    violations = policy.check(req, pod, ctx.policy, stage)
    if ctx.metrics is not None:
        for v in violations:
            ctx.metrics.violations.labels(v.rule, v.action).inc()
    decision.violations = [v.line for v in violations]
    decision.warnings += [v.line for v in violations if v.action == "warn"]
    denials = [v.line for v in violations if v.action == "deny"]
    if denials:
        raise PolicyError(denials)
