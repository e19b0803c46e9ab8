"""The metrics page as data: every sample by (name, labels), and the difference of two pages."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]
SampleKey = tuple[str, Labels]
Samples = dict[SampleKey, float]


def key(name: str, **labels: str) -> SampleKey:
    """`key("secret_injector_reviews_total", endpoint="mutate", ...)`."""
    return name, tuple(sorted(labels.items()))


def parse(text: str) -> Samples:
    """Every sample of a text-format page (raises ValueError on a malformed page)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            sample_key = key(sample.name, **sample.labels)
            if sample_key in samples:
                raise ValueError(f"sample {sample_key} appears twice")
            samples[sample_key] = sample.value
    return samples


def families(text: str) -> dict[str, str]:
    """Family name -> type (counter, gauge, histogram, info)."""
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def delta(before: Mapping[SampleKey, float], after: Mapping[SampleKey, float]) -> Samples:
    """Samples that changed (a series new since `before` counts from 0)."""
    changed: Samples = {}
    for sample_key in before.keys() | after.keys():
        difference = after.get(sample_key, 0.0) - before.get(sample_key, 0.0)
        if difference != 0:
            changed[sample_key] = difference
    return changed


def is_timing(sample_key: SampleKey) -> bool:
    """Samples whose change depends on how long things took: histogram sums and the
    finite buckets (the `+Inf` bucket and `_count` count events and are compared)."""
    name, labels = sample_key
    if name.endswith("_sum"):
        return True
    return name.endswith("_bucket") and dict(labels).get("le") != "+Inf"


def counted(changes: Mapping[SampleKey, float]) -> Samples:
    """The changes that count events: everything but timing."""
    return {k: v for k, v in changes.items() if not is_timing(k)}
