"""Operations on the real servers: ``/healthz``, ``/readyz`` (PostgreSQL, RabbitMQ, Redis and live
workers by heartbeat; false once the broker is gone), ``/metrics`` (the web's and a worker's) and
structured logs (JSON lines with request and run ids, never message contents).

The broker "stops" by closing a TCP proxy in front of RabbitMQ: the shared server stays up for the
other tests, while this web side sees connections refused, as with a stopped broker.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.asgi import live_asgi_server
from support.handover import wait_until
from support.live import RABBITMQ_URL, ROOT, start_worker, stop_worker, wait_ready
from support.proxy import TcpProxy
from support.server import free_port, launch

from webapp.library.services import register_deployment
from webapp.operations.logs import JsonFormatter, RequestIdFilter
from webapp.playground import services
from webapp.playground.models import Run, RunStatus
from workers import health, heartbeat

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

SECRET_PROMPT = "the zebra password is okapi-7731"


@pytest.fixture
def live_url() -> Iterator[str]:
    with live_asgi_server() as url:
        yield url


def _get(url: str, **kw: Any) -> httpx.Response:
    return httpx.get(url, timeout=30, **kw)


def _dockerfile_cmd(dockerfile: Path) -> list[str]:
    """The exec-form CMD of a Dockerfile (the last one)."""
    cmds = [line for line in dockerfile.read_text().splitlines() if line.startswith("CMD [")]
    return list(json.loads(cmds[-1][len("CMD ") :]))


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text as ``{(sample name, sorted labels): value}``."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _finish_turn(
    user: Any, conversation: Any, content: str, max_new_tokens: int, timeout: float = 120
) -> Run:
    runs = services.start_turn(
        user, conversation, content, sampling=services.Sampling(max_new_tokens=max_new_tokens, temperature=0)
    )
    run_id = runs[0].pk
    wait_until(lambda: not Run.objects.get(pk=run_id).active, timeout, f"run {run_id} to end")
    return Run.objects.get(pk=run_id)


# --------------------------------------------------------------------------------------------
# Liveness and request ids
# --------------------------------------------------------------------------------------------
def test_healthz_answers_under_any_host_and_only_to_reads(live_url: str) -> None:
    # Orchestrators probe a pod by its address: no ALLOWED_HOSTS entry for it.
    pod = {"Host": "10.42.0.7:8000"}
    reply = _get(f"{live_url}/healthz", headers=pod)
    assert reply.status_code == 200 and reply.json() == {"ok": True}
    assert (
        _get(f"{live_url}/api/health-of-nothing", headers=pod).status_code == 400
    )  # the rest checks the host
    assert httpx.head(f"{live_url}/healthz", timeout=30).status_code == 200
    assert httpx.post(f"{live_url}/healthz", timeout=30).status_code == 405
    assert httpx.post(f"{live_url}/readyz", timeout=30).status_code == 405
    assert httpx.delete(f"{live_url}/metrics", timeout=30).status_code == 405


def test_every_response_carries_a_request_id(live_url: str) -> None:
    given = _get(f"{live_url}/healthz", headers={"X-Request-ID": "lb-7f3a:01"})
    assert given.headers["X-Request-ID"] == "lb-7f3a:01"  # a proxy's id is kept
    fresh = _get(f"{live_url}/api/me")
    assert fresh.status_code == 401 and len(fresh.headers["X-Request-ID"]) == 32
    # Anything that is not a plain token (spaces, newlines: log injection) is replaced.
    odd = _get(f"{live_url}/healthz", headers={"X-Request-ID": "a b"})
    assert odd.headers["X-Request-ID"] not in ("a b", "") and " " not in odd.headers["X-Request-ID"]
    assert odd.headers["X-Request-ID"] != fresh.headers["X-Request-ID"]


# --------------------------------------------------------------------------------------------
# Readiness
# --------------------------------------------------------------------------------------------
def test_readyz_checks_the_real_servers_and_turns_false_without_the_broker(
    own_worker_stack: Any, settings: Any, live_url: str, tmp_path: Path
) -> None:
    stack = own_worker_stack
    proxy = TcpProxy("127.0.0.1", 5672)
    proxy.start()
    # The web side reaches RabbitMQ through the proxy; the worker, directly.
    settings.CELERY_BROKER_URL = RABBITMQ_URL.replace(":5672", f":{proxy.port}")
    settings.STEERLAB_READYZ_TIMEOUT_MS = 3000
    worker = start_worker(
        {**stack.worker_env, "STEERLAB_WORKER_HEARTBEAT_SECONDS": "1"},
        stack.queue,
        "ready-" + stack.queue,
        tmp_path / "worker.log",
    )
    try:
        wait_ready(worker, tmp_path / "worker.log")

        def mine(report: dict[str, Any], state: str) -> list[dict[str, Any]]:
            return [w for w in report["checks"]["workers"][state] if stack.queue in (w["queues"] or [])]

        ready = wait_until(
            lambda: (r := _get(f"{live_url}/readyz").json())["ready"] and mine(r, "live") and r,
            30,
            "readiness",
        )
        checks = ready["checks"]
        assert checks["database"]["vendor"] == "postgresql"
        assert checks["broker"] == {"ok": True, "ms": checks["broker"]["ms"]}
        assert "RedisPubSub" in checks["channel_layer"]["backend"]
        assert mine(ready, "live")[0]["name"].startswith("ready-" + stack.queue)
        # The worker image's health check (this host's workers: the session's may beat here too).
        check = subprocess.run(
            [sys.executable, "-m", "workers.health"],
            env={**os.environ, **stack.worker_env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert check.returncode == 0, check.stdout + check.stderr
        found = json.loads(check.stdout.strip().splitlines()[-1])
        assert found["healthy"] and any(
            w["name"].startswith("ready-" + stack.queue) for w in found["workers"]
        )

        proxy.stop()  # the broker is gone (connections refused)
        started = time.monotonic()
        down = _get(f"{live_url}/readyz")
        assert down.status_code == 503
        report = down.json()
        assert report["ready"] is False and report["checks"]["broker"]["ok"] is False
        assert report["checks"]["broker"]["error"]
        assert all(report["checks"][c]["ok"] for c in ("database", "channel_layer", "workers"))
        assert time.monotonic() - started < 3.0 + 2.0  # bounded by the timeout, never hanging
        assert _get(f"{live_url}/healthz").status_code == 200  # alive all the same: no restart

        proxy.start()  # back on the same port
        assert wait_until(lambda: _get(f"{live_url}/readyz").status_code == 200, 30, "the broker to return")

        # A worker that stops says goodbye: it is no longer counted (its drain: test_worker_drain).
        stop_worker(worker)
        assert worker.returncode == 0
        report = _get(f"{live_url}/readyz").json()
        assert not mine(report, "live") and not mine(report, "draining")
    finally:
        stop_worker(worker, signal.SIGKILL)
        proxy.stop()


def test_readyz_is_false_while_no_worker_beats(own_worker_stack: Any, settings: Any, live_url: str) -> None:
    # A cache namespace no worker writes to: the web side sees no heartbeat at all.
    settings.CACHES = {
        "default": {**settings.CACHES["default"], "KEY_PREFIX": f"noworkers{uuid.uuid4().hex[:8]}"}
    }
    reply = _get(f"{live_url}/readyz")
    assert reply.status_code == 503
    workers = reply.json()["checks"]["workers"]
    assert workers["ok"] is False and workers["live"] == [] and "heartbeat" in workers["error"]
    # A beat in that namespace (as a worker's) makes it ready; it expires after three intervals.
    assert health.live_here("test-host") == []
    heartbeat.beat("test-host:1", {"name": "w@test", "queues": ["model.tiny"], "draining": False}, 1.0)
    assert _get(f"{live_url}/readyz").status_code == 200
    # The worker container's health check sees the beats of its own host only.
    assert [w["name"] for w in health.live_here("test-host")] == ["w@test"]
    assert health.live_here("other-host") == []
    assert wait_until(lambda: _get(f"{live_url}/readyz").status_code == 503, 10, "the heartbeat to expire")


def test_readyz_in_the_embedded_default(settings: Any, live_url: str) -> None:
    settings.CELERY_BROKER_URL = ""
    report = _get(f"{live_url}/readyz").json()
    assert report["ready"] is True
    assert (
        report["checks"]["broker"]["mode"] == "embedded" and report["checks"]["workers"]["mode"] == "embedded"
    )


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------
def test_web_metrics_count_runs_tokens_queues_and_stream_lag(
    stack: Any, stack_deployment: Any, alice: Any, settings: Any, live_url: str
) -> None:
    conversation = services.create_conversation(alice, stack_deployment)
    before = _samples(_get(f"{live_url}/metrics").text)
    run = _finish_turn(alice, conversation, "Count me", 12)
    assert run.status == RunStatus.DONE
    reply = _get(f"{live_url}/metrics")
    assert reply.status_code == 200 and reply.headers["Content-Type"].startswith("text/plain")
    after = _samples(reply.text)
    for status in RunStatus.values:
        assert _value(after, "steerlab_runs", status=status) == Run.objects.filter(status=status).count()
    assert _value(after, "steerlab_queue_depth", deployment="tiny", kind="run") == 0
    assert _value(after, "steerlab_metrics_source_up", source="database") == 1
    assert _value(after, "steerlab_metrics_source_up", source="cache") == 1
    assert _value(after, "steerlab_engine_max_requests", deployment="tiny") > 0
    lag_count = "steerlab_stream_lag_seconds_count"
    if stack.name == "embedded":
        # The engine runs in this process: its token and batch series are here.
        generated = _value(after, "steerlab_generated_tokens_total", deployment="tiny") - _value(
            before, "steerlab_generated_tokens_total", deployment="tiny"
        )
        assert generated == len(run.tokens) == 12
        assert _value(after, "steerlab_engine_batch_size_count", deployment="tiny") > _value(
            before, "steerlab_engine_batch_size_count", deployment="tiny"
        )
    else:
        # No browser was subscribed; the lag is measured when a consumer hands frames on (below).
        assert _value(after, "steerlab_generated_tokens_total", deployment="tiny") == _value(
            before, "steerlab_generated_tokens_total", deployment="tiny"
        )
    assert _value(after, lag_count) >= _value(before, lag_count)


def test_queue_depth_counts_what_waits_for_a_worker(own_worker_stack: Any, alice: Any, live_url: str) -> None:
    from interventions.tiny import build_tiny

    # No worker serves this queue: what is sent there waits.
    deployment = register_deployment("tiny", str(build_tiny()), queue_name=own_worker_stack.queue)
    for content in ("one", "two"):
        services.start_turn(alice, services.create_conversation(alice, deployment), content)
    samples = _samples(_get(f"{live_url}/metrics").text)
    assert _value(samples, "steerlab_queue_depth", deployment="tiny", kind="run") == 2
    assert _value(samples, "steerlab_queue_depth", deployment="tiny", kind="job") == 0
    assert _value(samples, "steerlab_runs", status="queued") == 2


def test_stream_lag_is_measured_for_a_watching_browser(
    stack: Any, stack_deployment: Any, alice: Any, ws_headers: Any
) -> None:
    from support.live import Socket, run_async

    from webapp.asgi import application
    from webapp.operations.metrics import STREAM_LAG

    conversation = services.create_conversation(alice, stack_deployment)
    headers = ws_headers(alice)
    count = "steerlab_stream_lag_seconds_count"

    def lag_count() -> float:
        return next(s.value for m in STREAM_LAG.collect() for s in m.samples if s.name == count)

    before = lag_count()

    async def scenario() -> int:
        ws = Socket(application, f"/ws/conversations/{conversation.pk}/", headers)
        assert (await ws.connect())[0]
        reply = await ws.request(type="generate", content="Watch me", sampling={"max_new_tokens": 6})
        run_id: int = reply["runs"][0]["id"]
        await ws.finish(run_id)
        await ws.close()
        return run_id

    run_async(scenario())
    assert lag_count() > before  # each channel-layer message of frames is one observation


def test_metrics_need_the_token_when_one_is_set(settings: Any, live_url: str) -> None:
    settings.STEERLAB_METRICS_TOKEN = "scrape-me-3f9"
    assert _get(f"{live_url}/metrics").status_code == 401
    assert _get(f"{live_url}/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert _get(f"{live_url}/metrics", headers={"Authorization": "Basic scrape-me-3f9"}).status_code == 401
    reply = _get(f"{live_url}/metrics", headers={"Authorization": "Bearer scrape-me-3f9"})
    assert reply.status_code == 200 and "steerlab_runs" in reply.text
    openmetrics = _get(
        f"{live_url}/metrics",
        headers={"Authorization": "Bearer scrape-me-3f9", "Accept": "application/openmetrics-text"},
    )
    assert openmetrics.headers["Content-Type"].startswith("application/openmetrics-text")
    assert openmetrics.text.rstrip().endswith("# EOF")


def test_a_worker_serves_its_metrics_and_logs_json_without_message_contents(
    own_worker_stack: Any, alice: Any, tmp_path: Path
) -> None:
    from interventions.tiny import build_tiny

    stack = own_worker_stack
    deployment = register_deployment("tiny", str(build_tiny()), queue_name=stack.queue)
    conversation = services.create_conversation(alice, deployment)
    port = free_port()
    log_path = tmp_path / "worker.log"
    env = {
        **stack.worker_env,
        "STEERLAB_WORKER_METRICS_PORT": str(port),
        "STEERLAB_LOG_FORMAT": "json",
        "LOG_LEVEL": "DEBUG",  # the most a deployment could log
    }
    worker = start_worker(env, stack.queue, "metrics-" + stack.queue, log_path)
    try:
        wait_ready(worker, log_path)
        run = _finish_turn(alice, conversation, SECRET_PROMPT, 10)
        assert run.status == RunStatus.DONE
        metrics = _samples(_get(f"http://127.0.0.1:{port}/metrics").text)
    finally:
        stop_worker(worker)

    assert _value(metrics, "steerlab_generated_tokens_total", deployment="tiny") == 10
    assert _value(metrics, "steerlab_runs_finished_total", status="done") == 1
    assert _value(metrics, "steerlab_engine_batch_size_count", deployment="tiny") >= 10

    text = log_path.read_text()
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    finished = [r for r in records if r["message"] == "playground.run_finished"]
    assert len(finished) == 1 and finished[0]["run"] == run.pk and finished[0]["status"] == "done"
    assert {"timestamp", "level", "logger", "process"} <= finished[0].keys()
    # Never the conversation: neither the prompt nor the answer, anywhere in the log.
    assert "zebra" not in text and "okapi" not in text
    answer = run.answer.content if run.answer is not None else ""
    assert len(answer) >= 8 and answer not in text


def test_web_json_logs_carry_the_request_id(live_url: str) -> None:
    records: list[dict[str, Any]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(json.loads(self.format(record)))

    handler = Keep()
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        reply = _get(f"{live_url}/api/no-such-endpoint", headers={"X-Request-ID": "trace-42"})
        _get(f"{live_url}/api/no-such-endpoint")  # another request: another id
    finally:
        root.removeHandler(handler)
    assert reply.status_code == 404 and reply.headers["X-Request-ID"] == "trace-42"
    mine = {r["logger"]: r for r in records if r.get("request_id") == "trace-42"}
    assert mine["django.request"]["level"] == "WARNING"  # logged after the middleware returned
    access = mine["webapp.access"]
    assert (access["message"], access["path"], access["status"]) == (
        "http.request",
        "/api/no-such-endpoint",
        404,
    )
    ids = [r.get("request_id") for r in records if r["logger"] == "webapp.access"]
    assert len(ids) == 2 and ids[0] == "trace-42" and ids[1] not in (None, "trace-42")


def test_the_probes_also_answer_under_wsgi(client: Any, settings: Any) -> None:
    # The middleware has a synchronous path too (``manage.py runserver``, WSGI servers).
    settings.CELERY_BROKER_URL = ""
    assert client.get("/healthz", HTTP_HOST="10.42.0.7").json() == {"ok": True}
    reply = client.get("/readyz", HTTP_X_REQUEST_ID="wsgi-1")
    assert reply.status_code == 200 and reply.json()["checks"]["database"]["ok"] is True
    assert reply["X-Request-ID"] == "wsgi-1"
    assert b"steerlab_runs" in client.get("/metrics").content


def test_the_web_image_s_command_logs_json_with_request_ids_and_no_secrets(own_worker_stack: Any) -> None:
    """The web image's CMD, run here: every line JSON (uvicorn's own included), one access line
    per request with its id, status and user, and never a share token or a query string."""
    command = _dockerfile_cmd(ROOT / "docker" / "web.Dockerfile")
    port = free_port()
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port)
    env = {**os.environ, **own_worker_stack.worker_env, "STEERLAB_LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}
    process, output = launch(
        [str(Path(sys.executable).parent / command[0]), *command[1:]],
        ROOT,
        env,
        re.compile(r".*Uvicorn running on"),
        timeout=60,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        assert _get(f"{url}/healthz").status_code == 200
        assert (
            _get(f"{url}/api/shared/s3cr3t-share-token", headers={"X-Request-ID": "img-1"}).status_code == 404
        )
        assert _get(f"{url}/api/me?api_key=s3cr3t-query").status_code == 401
        wait_until(lambda: sum("http.request" in line for line in output.lines) >= 2, 10, "the access lines")
    finally:
        process.terminate()
        process.wait(timeout=30)
    output.thread.join(timeout=10)
    lines = [line for line in output.lines if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert any(r["logger"].startswith("uvicorn") for r in records)
    access = [r for r in records if r["message"] == "http.request"]
    assert [(r["path"], r["status"]) for r in access] == [("/api/shared/[token]", 404), ("/api/me", 401)]
    assert access[0]["request_id"] == "img-1" and access[0]["method"] == "GET" and access[0]["ms"] >= 0
    assert "s3cr3t" not in "\n".join(lines)
