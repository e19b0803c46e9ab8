"""The benchmark's report: the targets of issue #7 (PASS/MISS) and a Markdown table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

RSS_LIMIT_MIB = 100.0
RSS_REVIEWS = 100_000
# A pause without load before RSS is read again: longer than the webhook's interval
# between malloc_trim calls (webhook/memory.py), so the second reading shows what the
# process keeps once the load is gone, and the first what it holds under load.
IDLE_SECONDS = 15.0


def _pair(result: Mapping[str, Any], body: str, connections: int) -> tuple[Any, Any]:
    for row in result["summary"]:
        if row["body"] == body and row["concurrency"] == connections:
            return row["floor"], row["webhook"]
    return None, None


def _ratio(floor: Mapping[str, Any] | None, webhook: Mapping[str, Any] | None) -> float | None:
    if not floor or not webhook or not floor["rate"]:
        return None
    return float(webhook["rate"]) / float(floor["rate"])


def targets(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each target with the measured value and whether it is met (None: not measured)."""
    rows: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float, *, at_least: bool, unit: str) -> None:
        met = None if value is None else (value >= limit if at_least else value <= limit)
        sign = ">=" if at_least else "<="
        rows.append(
            {
                "target": f"{name} {sign} {limit:g}{unit}",
                "value": None if value is None else round(value, 3),
                "unit": unit,
                "met": met,
            }
        )

    floor, webhook = _pair(result, "typical", 8)
    add("typical c=8 throughput", _ratio(floor, webhook), 0.75, at_least=True, unit="x floor")
    p99 = webhook["latency_ms"]["p99"] if webhook else None
    add("typical c=8 p99", p99, 4.0, at_least=False, unit=" ms")
    add(
        "large c=8 throughput",
        _ratio(*_pair(result, "large", 8)),
        0.8,
        at_least=True,
        unit="x floor",
    )
    add(
        "skip c=8 throughput", _ratio(*_pair(result, "skip", 8)), 0.9, at_least=True, unit="x floor"
    )
    cold = result.get("cold")
    add("cold path p99", cold["cold"]["latency_ms"]["p99"] if cold else None, 20.0,
        at_least=False, unit=" ms")  # fmt: skip
    memory = result["memory"].get("webhook")
    rss = memory["rss_final_mib"] if memory and memory["reviews"] >= RSS_REVIEWS else None
    add(
        f"webhook RSS after {RSS_REVIEWS:,} reviews",
        rss,
        RSS_LIMIT_MIB,
        at_least=False,
        unit=" MiB",
    )
    return rows


def _verdict(met: bool | None) -> str:
    return {True: "PASS", False: "MISS", None: "n/a"}[met]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _ms(case: Mapping[str, Any] | None, key: str) -> str:
    return f"{case['latency_ms'][key]:.2f}" if case else "-"


def _contention(result: Mapping[str, Any]) -> str:
    shares = sorted(c.get("foreign_cpu0_pct", 0.0) for c in result["cases"])
    if not shares:
        return ""
    median = shares[len(shares) // 2]
    again = sum(1 for c in result["cases"] if c.get("attempts", 1) > 1)
    return (
        f"Other processes on the servers' CPU during the cases: median {median:.0f} %, "
        f"max {shares[-1]:.0f} % of the CPU (0 on an idle machine; high values make a "
        f"case noisy); {again} of {len(shares)} runs measured again because others took more."
    )


def markdown(result: Mapping[str, Any]) -> str:
    meta = result["meta"]
    sizes = meta.get("body_bytes", {})
    lines = [
        f"### secret-injector benchmark ({meta['started']}, commit {meta['commit']})",
        "",
        f"{meta['cpu']}, {meta['cpus']} CPUs; servers pinned to CPU 0, wrk to CPU 1; TLS 1.3 "
        f"ECDSA P-256, keep-alive; priority {meta.get('priority', 'default')}; "
        f"{meta['duration_s']:g} s per case, median of "
        f"{meta['repeat']}; webhook: {meta['webhook']}, verify {meta['verify']} "
        + (
            "(warm cache, real OpenBao and moto). "
            if meta.get("verification_active")
            else "but NOT ACTIVE: the webhook verified nothing (no verifier wired). "
        )
        + "Bodies: "
        + ", ".join(
            f"{name} {sizes[name] / 1024:.1f} KiB"
            for name in sizes
            if name in ("small", "typical", "large", "skip")
        ),
        "",
        _contention(result),
        "",
    ]
    header = [
        "body", "c", "floor req/s", "webhook req/s", "ratio", "webhook p50 ms",
        "webhook p99 ms", "floor p99 ms", "webhook CPU µs/review", "floor CPU µs/review",
    ]  # fmt: skip
    rows = []
    for row in result["summary"]:
        floor, webhook = row["floor"], row["webhook"]
        ratio = _ratio(floor, webhook)
        rows.append(
            [
                row["body"],
                str(row["concurrency"]),
                f"{floor['rate']:,.0f}" if floor else "-",
                f"{webhook['rate']:,.0f}" if webhook else "-",
                f"{ratio:.2f}" if ratio is not None else "-",
                _ms(webhook, "p50"),
                _ms(webhook, "p99"),
                _ms(floor, "p99"),
                f"{webhook['cpu_us_per_review']:.0f}" if webhook else "-",
                f"{floor['cpu_us_per_review']:.0f}" if floor else "-",
            ]
        )
    lines += _table(header, rows)
    cold = result.get("cold")
    if cold:
        alone = cold.get("warm_alone")
        lines += [
            "",
            f"Cold path (typical, c=8 warm + 2 paced connections with a fresh OpenBao reference "
            f"per review; {cold['cold_share'] * 100:.1f} % of reviews cold):",
            "",
        ]
        lines += _table(
            ["reviews", "req/s", "p50 ms", "p99 ms", "max ms"],
            [
                [
                    "cold (fresh reference)",
                    f"{cold['cold']['rate']:,.0f}",
                    _ms(cold["cold"], "p50"),
                    _ms(cold["cold"], "p99"),
                    _ms(cold["cold"], "max"),
                ],
                [
                    "cold, on an otherwise idle webhook",
                    f"{cold['cold_alone']['rate']:,.0f}",
                    _ms(cold["cold_alone"], "p50"),
                    _ms(cold["cold_alone"], "p99"),
                    _ms(cold["cold_alone"], "max"),
                ],
                [
                    "warm, during the cold load",
                    f"{cold['warm']['rate']:,.0f}",
                    _ms(cold["warm"], "p50"),
                    _ms(cold["warm"], "p99"),
                    _ms(cold["warm"], "max"),
                ],
                [
                    "warm alone (matrix)",
                    f"{alone['rate']:,.0f}" if alone else "-",
                    _ms(alone, "p50"),
                    _ms(alone, "p99"),
                    _ms(alone, "max"),
                ],
            ],
        )
        if cold.get("metrics_delta"):
            lines += ["", "Webhook counters during the cold run: " + ", ".join(
                f"`{k}` +{v:,.0f}" for k, v in cold["metrics_delta"].items())]  # fmt: skip
    lines += ["", "Memory:", ""]
    lines += _table(
        [
            "server",
            "reviews",
            "RSS after warm-up MiB",
            "RSS at end MiB",
            "change",
            f"RSS {IDLE_SECONDS:g} s later MiB",
            "open fds",
        ],
        [
            [
                name,
                f"{m['reviews']:,}",
                f"{m['rss_after_warmup_mib']:.1f}",
                f"{m['rss_final_mib']:.1f}",
                f"{(m['rss_final_mib'] / m['rss_after_warmup_mib'] - 1) * 100:+.1f} %",
                f"{m['rss_idle_mib']:.1f}" if "rss_idle_mib" in m else "-",
                str(m["open_fds"]),
            ]
            for name, m in result["memory"].items()
        ],
    )
    lines += ["", "Targets (issue #7):", ""]
    lines += _table(
        ["target", "measured", "verdict"],
        [
            [
                t["target"],
                "-" if t["value"] is None else f"{t['value']:g}{t['unit']}",
                _verdict(t["met"]),
            ]
            for t in result["targets"]
        ],
    )
    return "\n".join(lines)
