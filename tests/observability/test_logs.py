"""The log format: JSON lines with the record's fields, levels that filter, values hidden
from error lines, and an internal error that says what to act on without the pod's values."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import PREFIX, make_pod, make_review
from tests.observability.scrape import delta, key, parse
from webhook import certs, logs, pipeline, review
from webhook.app import Server
from webhook.metrics import Metrics
from webhook.review import AdmissionRequest
from webhook.settings import Listen, Settings, Tls, Verify
from webhook.tls import ReloadingContext

SECRET = "hunter2-but-longer"


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_logs_json_line_has_the_record_and_its_fields(log_stream: io.StringIO) -> None:
    logs.configure("info", log_stream)
    logging.getLogger("secret_injector.test").info(
        "policy reloaded", extra={"policy_file": "/p.yaml", "count": 3, "none": None}
    )
    (entry,) = lines(log_stream)
    assert entry.pop("time").endswith("Z")
    assert entry == {
        "level": "info",
        "logger": "secret_injector.test",
        "msg": "policy reloaded",
        "policy_file": "/p.yaml",
        "count": 3,
        "none": None,
    }


@pytest.mark.parametrize(
    ("created", "shown"),
    [
        pytest.param(1764387600.0, "2025-11-29T03:40:00.000Z", id="whole-second"),
        pytest.param(1764387600.1234, "2025-11-29T03:40:00.123Z", id="milliseconds"),
        pytest.param(1764387600.0006, "2025-11-29T03:40:00.001Z", id="rounded-up"),
        pytest.param(1764387659.9996, "2025-11-29T03:41:00.000Z", id="into-the-next-minute"),
    ],
)
def test_logs_time_is_utc_to_the_nearest_millisecond(created: float, shown: str) -> None:
    record = logging.LogRecord("secret_injector.test", logging.INFO, "", 0, "m", None, None)
    record.created = created
    assert json.loads(logs.JsonFormatter().format(record))["time"] == shown


@pytest.mark.parametrize(
    ("level", "written"),
    [
        pytest.param("debug", ["debug", "info", "warning", "error"], id="debug"),
        pytest.param("info", ["info", "warning", "error"], id="info"),
        pytest.param("warning", ["warning", "error"], id="warning"),
        pytest.param("error", ["error"], id="error"),
    ],
)
def test_logs_level_is_configurable(
    log_stream: io.StringIO, level: logs.Level, written: list[str]
) -> None:
    logs.configure(level, log_stream)
    log = logging.getLogger("secret_injector.test")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    assert [e["level"] for e in lines(log_stream)] == written


def test_logs_sdks_stay_at_warning_even_in_debug(log_stream: io.StringIO) -> None:
    """SDK debug output can echo request and response bodies."""
    logs.configure("debug", log_stream)
    logging.getLogger("botocore.endpoint").debug("Response body: ...")
    logging.getLogger("hvac.adapters").info("GET secret/data/...")
    logging.getLogger("botocore.endpoint").warning("retrying")
    assert [e["msg"] for e in lines(log_stream)] == ["retrying"]


def test_logs_exception_is_one_json_line_with_the_traceback(log_stream: io.StringIO) -> None:
    logs.configure("info", log_stream)
    try:
        raise ValueError("broken")
    except ValueError:
        logging.getLogger("secret_injector.test").exception("failed", extra={"uid": "u1"})
    (entry,) = lines(log_stream)
    assert (entry["level"], entry["msg"], entry["uid"]) == ("error", "failed", "u1")
    assert entry["error"].startswith("Traceback (most recent call last):")
    assert entry["error"].endswith("ValueError: broken")


def test_logs_redacting_hides_values_everywhere_in_the_record(log_stream: io.StringIO) -> None:
    logs.configure("info", log_stream)
    try:
        raise KeyError(f"no {SECRET} here")
    except KeyError:
        logging.getLogger("secret_injector.test").exception(
            "failed on %s",
            SECRET,
            extra={"field": f"x{SECRET}x", "items": [SECRET], **logs.redacting([SECRET, "on"])},
        )
    text = log_stream.getvalue()
    assert SECRET not in text
    (entry,) = lines(log_stream)
    assert entry["msg"] == "failed on [redacted]"
    assert (entry["field"], entry["items"]) == ("x[redacted]x", ["[redacted]"])
    assert "KeyError: 'no [redacted] here'" in entry["error"]
    assert "_redact" not in entry
    assert "failed on" in entry["msg"]  # "on" is too short to be hidden


def test_logs_redacting_in_text_output(log_stream: io.StringIO) -> None:
    logs.configure("info", log_stream, structured=False)
    logging.getLogger("secret_injector.test").error(
        "bad %s", SECRET, extra=logs.redacting([SECRET])
    )
    assert log_stream.getvalue() == "secret-injector: error: bad [redacted]\n"


@pytest.mark.parametrize(
    ("pod", "values"),
    [
        pytest.param(None, [], id="no-pod"),
        pytest.param({"spec": "x"}, [], id="bad-spec"),
        pytest.param(make_pod(), [], id="no-env"),
        pytest.param(
            make_pod(
                containers=[
                    {
                        "name": "a",
                        "env": [
                            {"name": "A", "value": "one"},
                            {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s"}}},
                            {"name": "C", "value": ""},
                            "junk",
                        ],
                    }
                ],
                init_containers=[{"name": "i", "env": [{"name": "D", "value": "two"}]}],
                ephemeralContainers=[{"name": "e", "env": [{"name": "E", "value": "three"}]}],
            ),
            ["one", "two", "three"],
            id="every-container-kind",
        ),
    ],
)
def test_logs_literal_env_values(pod: dict[str, Any] | None, values: list[str]) -> None:
    assert sorted(logs.literal_env_values(pod)) == sorted(values)


async def test_logs_internal_error_has_context_and_no_pod_values(
    log_stream: io.StringIO, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug whose exception quotes the pod: the error line names the request, the
    traceback hides the pod's literal values, the pod is denied, `error` is counted."""

    async def broken(req: AdmissionRequest, ctx: pipeline.Context) -> pipeline.Decision:
        env = req.pod["spec"]["containers"][0]["env"] if req.pod else []
        raise RuntimeError(f"cannot handle {env}")

    monkeypatch.setattr(pipeline, "admit", broken)
    logs.configure("info", log_stream)
    files, _ = certs.write_dev_certs(tmp_path / "certs")
    settings = Settings(
        listen=Listen(address="127.0.0.1", port=0, metrics_address="127.0.0.1", metrics_port=0),
        tls=Tls(cert_file=str(files.cert), key_file=str(files.key)),
        verify=Verify(mode="off"),
    )
    metrics = Metrics()
    server = Server(settings, metrics, ReloadingContext(settings.tls, metrics))
    await server.start()
    pod = make_pod(
        {PREFIX + "inject": "true", PREFIX + "file.db": "vault:secret/data/shop/db#pw"},
        containers=[{"name": "app", "env": [{"name": "DB_PASSWORD", "value": SECRET}]}],
        name="web-1",
        namespace="shop",
    )
    review = make_review(pod, uid="0c6f0f0e-1111-2222-3333-444444444444")
    before = parse(metrics.render().decode())
    context = ssl.create_default_context(cafile=str(files.ca_cert))
    try:
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
            session.post(f"https://localhost:{server.port}/mutate", json=review) as response,
        ):
            answer = (await response.json())["response"]
    finally:
        await server.stop()
    assert (response.status, answer["allowed"], answer["status"]["code"]) == (200, False, 500)
    assert SECRET not in log_stream.getvalue()
    (error,) = [e for e in lines(log_stream) if e["level"] == "error"]
    assert error["msg"] == "admission review failed with an internal error"
    assert {k: error[k] for k in ("endpoint", "uid", "namespace", "pod", "operation")} == {
        "endpoint": "mutate",
        "uid": review["request"]["uid"],
        "namespace": "shop",
        "pod": "web-1",
        "operation": "CREATE",
    }
    assert (
        "RuntimeError: cannot handle [{'name': 'DB_PASSWORD', 'value': '[redacted]'}]"
        in (error["error"])
    )
    (audit,) = [e for e in lines(log_stream) if e["logger"] == "secret_injector.audit"]
    assert (audit["uid"], audit["decision"], audit["outcome"], audit["code"]) == (
        review["request"]["uid"],
        "denied",
        "error",
        500,
    )
    moved = delta(before, parse(metrics.render().decode()))
    assert (
        moved[
            key(
                "secret_injector_reviews_total",
                endpoint="mutate",
                operation="CREATE",
                outcome="error",
            )
        ]
        == 1
    )


async def test_logs_audit_lines_reach_the_stream_each_loop_turn_in_order(
    log_stream: io.StringIO, tmp_path: Path
) -> None:
    """Audit lines are written unflushed and flushed once per event-loop turn; a log
    record written in between comes after them, as it happened."""
    out = tmp_path / "stdout"
    with out.open("w", buffering=1 << 16) as stream:  # block-buffered, as stdout in a pod
        logs.configure("info", stream)
        req = review.parse_review(orjson.dumps(make_review(make_pod({}, name="web-1"))))
        decision = pipeline.Decision(outcome="skipped")
        logs.audit("mutate", req, decision, 0.001)
        logs.audit("validate", req, decision, 0.001)
        logging.getLogger("secret_injector.test").warning("after two decisions")
        logs.audit("mutate", req, decision, 0.001)
        written = [json.loads(line) for line in out.read_text().splitlines()]
        assert [e.get("endpoint", e["msg"]) for e in written] == [
            "mutate",
            "validate",
            "after two decisions",
        ]
        await asyncio.sleep(0)  # the end of this turn of the loop
        written = [json.loads(line) for line in out.read_text().splitlines()]
        assert [e.get("endpoint", e["msg"]) for e in written][3:] == ["mutate"]
        assert {e["logger"] for e in written} == {logs.AUDIT, "secret_injector.test"}


def test_logs_audit_lines_are_info_lines(log_stream: io.StringIO) -> None:
    """`logging.level: warning` turns the audit lines off, as any info line."""
    req = review.parse_review(orjson.dumps(make_review(make_pod({}, name="web-1"))))
    decision = pipeline.Decision(outcome="skipped")
    logs.configure("warning", log_stream)
    logs.audit("mutate", req, decision, 0.001)
    assert log_stream.getvalue() == ""
    logs.configure("info", log_stream)
    logs.audit("mutate", req, decision, 0.001)
    (entry,) = lines(log_stream)
    assert (entry["logger"], entry["level"], entry["outcome"]) == (logs.AUDIT, "info", "skipped")
