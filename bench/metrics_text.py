"""Read the webhook's Prometheus counters, to show what the cache and backends did."""

from __future__ import annotations

import http.client

# Counters worth a before/after in the report (names as exposed, with `_total`).
WATCHED = (
    "secret_injector_verify_cache_lookups_total",
    "secret_injector_backend_requests_total",
    "secret_injector_reviews_total",
)


def scrape(port: int | None) -> dict[str, float]:
    """Watched samples (`name{labels}` -> value); empty when there is no metrics port."""
    if port is None:
        return {}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    except OSError:
        return {}
    finally:
        conn.close()
    return parse(text)


def parse(text: str) -> dict[str, float]:
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(WATCHED):
            key, _, value = line.rpartition(" ")
            try:
                samples[key] = float(value)
            except ValueError:
                continue
    return samples


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What changed between two scrapes (zero changes left out)."""
    changed = {key: after[key] - before.get(key, 0.0) for key in after}
    return {key: value for key, value in sorted(changed.items()) if value}


def gauge(port: int | None, name: str) -> float | None:
    """The value of an unlabelled gauge, or None when it cannot be read."""
    if port is None:
        return None
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    except OSError:
        return None
    finally:
        conn.close()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None
