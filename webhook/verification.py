"""Verification: every reference of a pod checked for existence, metadata only, in time.

Config `verify`: `off` (no verifier), `warn` (a missing secret is an AdmissionResponse
warning) or `enforce` (a denial). A backend that cannot answer (down, slow, refusing the
webhook's identity) is handled per `onBackendError`: `warn` or `deny`. The whole review's
checks run concurrently under one deadline (`timeoutSeconds`), through a bounded TTL cache
shared by concurrent reviews (one backend call per reference however many pods ask at
once) and a circuit breaker per backend. Every line names the annotation and the reference:

    secret-injector.io/env.DB_PASSWORD: vault:secret/data/prod/db#password: secret not found
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final

import boto3

from webhook import providers
from webhook.backends import (
    Backend,
    BackendError,
    BackendName,
    Existence,
    Lookup,
    lookup_for,
)
from webhook.backends.aws import AwsClients, ParameterStoreBackend, SecretsManagerBackend
from webhook.backends.breaker import CircuitBreaker
from webhook.backends.cache import Answer, ExistenceCache, Land
from webhook.backends.vault import VaultBackend
from webhook.errors import BackendUnavailableError, SecretNotFoundError
from webhook.metrics import Metrics
from webhook.refs import Injection, PodInjection
from webhook.review import AdmissionRequest
from webhook.settings import Settings

log = logging.getLogger(__name__)

BreakerKey = tuple[BackendName, str | None]

NOT_VERIFIED: Final = "not verified"
# Pods whose lookups are kept (see ReferenceVerifier._lookups): as many as the decision
# cache's default maxEntries; emptied when full.
WANTED_MAX_ENTRIES: Final = 256


@dataclass(slots=True)
class _PodLookups:
    """The lookups of one PodInjection, by the annotations that need each."""

    pod: PodInjection
    lookups: dict[Lookup, list[Injection]]
    # Every lookup was found, and the cache keeps that answer until then (its clock).
    found_until: float = 0.0


class ReferenceVerifier:
    """Implements pipeline.Verifier over real backends; one per process, shared by reviews."""

    def __init__(
        self, settings: Settings, metrics: Metrics, backends: Mapping[BackendName, Backend]
    ) -> None:
        verify = settings.verify
        self._settings = settings
        self._verify = verify
        self._metrics = metrics
        self._backends = dict(backends)
        lookups = {result: metrics.cache_lookups.labels(result) for result in ("hit", "miss")}
        self._cache: ExistenceCache[Lookup] = ExistenceCache(
            ttl=verify.cache_ttl_seconds,
            negative_ttl=verify.negative_cache_ttl_seconds,
            max_entries=verify.cache_max_entries,
            on_lookup=lambda result: lookups[result].inc(),
        )
        self._breakers: dict[BreakerKey, CircuitBreaker] = {}
        self._wanted: dict[int, _PodLookups] = {}
        # A call gives up a little before the review does, so the review sees the call's
        # own answer (and the breaker has counted it) rather than only its own deadline.
        self._call_timeout = max(verify.timeout_seconds - 0.05, verify.timeout_seconds * 0.9)
        self._executor = ThreadPoolExecutor(
            max_workers=verify.max_concurrent_calls, thread_name_prefix="verify"
        )
        self._warm_ups = [
            self._executor.submit(backend.warm_up, settings.providers.aws.region)
            for backend in self._backends.values()
        ]

    async def wait_ready(self) -> None:
        """Wait for the start-up warm-up (clients made, logged in) to finish, however it went."""
        await asyncio.wait([asyncio.wrap_future(f) for f in self._warm_ups])

    async def verify(self, req: AdmissionRequest, pod: PodInjection) -> list[str]:
        """Warnings for the review; raises SecretNotFoundError / BackendUnavailableError."""
        wanted = self._lookups(pod)
        if not wanted.lookups:
            return []
        if wanted.found_until > self._cache.now():  # the pods of a template, cache warm
            self._cache.count_hits(len(wanted.lookups))
            return []
        answers = await self._answer_all(list(wanted.lookups))
        missing: list[str] = []
        unverified: list[str] = []
        for lookup, injections in wanted.lookups.items():
            answer = answers[lookup]
            if isinstance(answer, Existence) and answer.found:
                continue
            for injection in injections:
                line = f"{injection.annotation}: {injection.ref}: "
                if isinstance(answer, BackendError):
                    unverified.append(f"{line}{NOT_VERIFIED}: {lookup.backend} {answer.reason}")
                else:
                    missing.append(line + answer.problem)
        if not missing and not unverified:
            wanted.found_until = self._cache.fresh_until(wanted.lookups)
            return []
        if missing and self._verify.mode == "enforce":
            # A definite "not found" outranks "could not tell"; the denial lists both.
            raise SecretNotFoundError(missing + unverified)
        if unverified and self._verify.on_backend_error == "deny":
            raise BackendUnavailableError(unverified + missing)
        return missing + unverified

    def _lookups(self, pod: PodInjection) -> _PodLookups:
        """What to look up for `pod`, and for which of its annotations.

        Kept per PodInjection object: the decision cache hands the same one to every pod
        of a template, so a ReplicaSet's pods group their references once, and once all
        were found, skip the cache until the first of their answers expires. The entry
        holds the object, so its id is not reused while the entry lives.
        """
        known = self._wanted.get(id(pod))
        if known is not None and known.pod is pod:
            return known
        # The region the SPC will mount from, so we check where the pod will read.
        region = providers.aws_region(pod, self._settings)
        lookups: dict[Lookup, list[Injection]] = {}
        for injection in pod.injections:
            lookups.setdefault(lookup_for(injection.ref, region), []).append(injection)
        if len(self._wanted) >= WANTED_MAX_ENTRIES:
            self._wanted.clear()
        wanted = self._wanted[id(pod)] = _PodLookups(pod, lookups)
        return wanted

    async def _answer_all(self, lookups: list[Lookup]) -> dict[Lookup, Answer]:
        """Every lookup's answer, or a BackendError for those not answered by the deadline."""
        warm = self._cache.cached_all(lookups)
        if warm is not None:  # the common case: no future, no timer, nothing to wait for
            return dict(warm)
        waiting = {lookup: self._cache.get(lookup, self._load) for lookup in lookups}
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._verify.timeout_seconds):
                for waiter in waiting.values():
                    await waiter  # at the deadline, cancels only our own wait
        late = self._late()
        answers: dict[Lookup, Answer] = {}
        for lookup, waiter in waiting.items():
            if waiter.done() and not waiter.cancelled():
                answers[lookup] = waiter.result()
            else:
                waiter.cancel()
                answers[lookup] = late
        return answers

    def _load(self, lookup: Lookup, land: Land) -> None:
        """Start one backend call for `lookup`, through its circuit breaker; `land` gets
        the answer (or a BackendError) on the event loop, within the call's deadline."""
        backend = self._backends[lookup.backend]
        breaker = self._breaker(lookup)
        if not breaker.allow():
            self._metrics.backend_requests.labels(backend=backend.name, result="circuit_open").inc()
            land(
                BackendError(
                    f"is failing ({breaker.failures} failures in a row; "
                    f"next try in {round(breaker.retry_in(), 1):g}s)",
                    "unavailable",
                )
            )
            return
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        settled = False

        def settle(answer: Answer) -> None:  # on the loop: the call's answer or its deadline
            nonlocal settled
            if settled:
                return  # a late answer after the deadline: the breaker has counted it
            settled = True
            deadline.cancel()
            self._record(lookup, backend, breaker, answer, time.monotonic() - started)
            land(answer)

        def call() -> None:  # in a worker thread
            answer: Answer
            try:
                answer = backend.check(lookup.target, lookup.region)
            except BackendError as error:
                answer = error
            except Exception as exc:  # a bug or an SDK surprise: an answer, never a 500
                log.exception("verification of a %s reference failed", backend.name)
                answer = BackendError(f"failed unexpectedly ({type(exc).__name__})", "error")
            with contextlib.suppress(RuntimeError):  # the loop is closed: shutting down
                loop.call_soon_threadsafe(settle, answer)

        deadline = loop.call_later(self._call_timeout, settle, self._late())
        try:
            self._executor.submit(call)
        except RuntimeError:  # the executor is shut down: shutting down
            settle(BackendError("is shutting down", "unavailable"))

    def _late(self) -> BackendError:
        """The answer of a backend that did not answer by the deadline (the call's own,
        or the review's)."""
        return BackendError(f"did not answer within {self._verify.timeout_seconds:g}s", "timeout")

    def _record(
        self,
        lookup: Lookup,
        backend: Backend,
        breaker: CircuitBreaker,
        answer: Answer,
        seconds: float,
    ) -> None:
        """A call's metrics, its effect on the breaker, and a log line when it failed."""
        self._metrics.backend_duration.labels(backend=backend.name).observe(seconds)
        requests = self._metrics.backend_requests
        if isinstance(answer, BackendError):
            result = "timeout" if answer.kind == "timeout" else "error"
            requests.labels(backend=backend.name, result=result).inc()
            if answer.transient:
                breaker.record_failure()
            else:
                breaker.record_success()  # it answered: alive, if unhelpful
            log.warning(
                "%s could not verify a reference: %s",
                backend.name,
                answer.reason,
                extra={
                    "backend": backend.name,
                    "kind": answer.kind,
                    "reference": str(lookup.target).split("#", 1)[0],  # path, no key
                    "region": lookup.region,
                },
            )
            return
        breaker.record_success()
        requests.labels(backend=backend.name, result="found" if answer.found else "missing").inc()

    def _breaker(self, lookup: Lookup) -> CircuitBreaker:
        key = (lookup.backend, lookup.region)
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = CircuitBreaker(
                self._verify.breaker_failures, self._verify.breaker_reset_seconds
            )
            self._breakers[key] = breaker
        return breaker

    async def close(self) -> None:
        """Stop loads under way and release clients and threads."""
        self._cache.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        for backend in self._backends.values():
            backend.close()


def open_verifier(
    settings: Settings, metrics: Metrics, *, aws_session: boto3.Session | None = None
) -> ReferenceVerifier | None:
    """The verifier for `settings.verify`, or None when verification is off.

    Never fails on an unreachable backend: clients are made and Vault logged in to in the
    background (`wait_ready`), and a backend that is down at start-up is handled per
    `onBackendError` like one that goes down later.
    """
    verify = settings.verify
    if verify.mode == "off":
        return None
    timeout = verify.timeout_seconds
    aws = AwsClients(timeout, aws_session)
    backends: dict[BackendName, Backend] = {
        "vault": VaultBackend(
            settings.providers.vault, timeout=timeout, mount_ttl=verify.cache_ttl_seconds
        ),
        "aws-sm": SecretsManagerBackend(aws),
        "aws-ssm": ParameterStoreBackend(aws),
    }
    return ReferenceVerifier(settings, metrics, backends)
