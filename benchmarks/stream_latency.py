"""Worker -> browser latency of run events through the deployment path (docs/design.md §6).

Path: the worker's publisher (``workers.host.EngineHost`` + the ``EventSink`` that
``execute_run`` uses, persisting every 250 ms to PostgreSQL) -> the Redis channel layer ->
the ASGI server (uvicorn, a separate process, the real ``ConversationConsumer`` with its
dedupe/gap logic) -> real websockets -> 50 clients in another separate process.

50 concurrent streams (one user, conversation and run each) publish 20 token events per second
each for 30 s. Each event carries its publish time (``time.time()``, one clock: one machine);
the client process records receive time minus publish time, and counts events lost (never
received) and duplicated.

Prints ``RESULT p50_ms=<> p99_ms=<> streams=50 events=<n> lost=<n> dup=<n> rate=<events/s>``.

Needs PostgreSQL (database ``steerlab_bench``, created and migrated here) and Redis on
127.0.0.1. Run: ``python benchmarks/stream_latency.py`` (``--layer core`` measures
channels-redis' core layer instead of the bounded pub/sub layer the settings use; ``--seconds``,
``--streams``, ``--rate`` change the load).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH_DB = "steerlab_bench"
PG = "postgres://postgres@127.0.0.1:5432"
REDIS = "redis://127.0.0.1:6379/0"


def _env(layer: str, prefix: str) -> dict[str, str]:
    return {
        "DATABASE_URL": f"{PG}/{BENCH_DB}",
        "REDIS_URL": REDIS,
        "CHANNEL_PREFIX": prefix,
        "CHANNEL_LAYER_KIND": layer,
        "SECRET_KEY": "stream-latency-benchmark-" + "k" * 40,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "false",
        "LOG_LEVEL": "WARNING",
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ensure_database() -> None:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (BENCH_DB,)).fetchone():
            conn.execute(f"CREATE DATABASE {BENCH_DB}")


# ------------------------------------------------------------------------------------------
# The client process
# ------------------------------------------------------------------------------------------
async def _client_stream(
    port: int, conv: int, run: int, cookie: str, ready: asyncio.Event, out: dict
) -> None:
    import websockets

    latencies: list[float] = out["latencies"]
    seen: set[int] = set()
    dups = 0
    async with websockets.connect(
        f"ws://127.0.0.1:{port}/ws/conversations/{conv}/",
        additional_headers={"Origin": f"http://127.0.0.1:{port}", "Cookie": cookie},
        max_size=None,
    ) as ws:
        await ws.send(json.dumps({"type": "resume", "run": run, "attempt": 1, "seq": 0}))
        while json.loads(await ws.recv())["type"] != "resumed":
            pass
        ready.set()
        async for raw in ws:
            now = time.time()
            frame = json.loads(raw)
            if frame.get("run") != run or "seq" not in frame:
                continue
            if frame["seq"] in seen:
                dups += 1
                continue
            seen.add(frame["seq"])
            if frame["type"] == "token":
                latencies.append((now - frame["t"]) * 1000.0)
            elif frame["type"] == "finished":
                break
    out["received"] += len(seen)
    out["dup"] += dups
    out["max_seq"] += max(seen, default=0)


async def _client_main(port: int, streams: list[dict[str, Any]]) -> None:
    out: dict[str, Any] = {"latencies": [], "received": 0, "dup": 0, "max_seq": 0}
    readies = [asyncio.Event() for _ in streams]
    tasks = [
        asyncio.create_task(_client_stream(port, s["conv"], s["run"], s["cookie"], r, out))
        for s, r in zip(streams, readies, strict=True)
    ]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 60)
    print("READY", flush=True)
    await asyncio.wait_for(asyncio.gather(*tasks), 600)
    print("STATS " + json.dumps(out), flush=True)


# ------------------------------------------------------------------------------------------
# The publisher (this process): the worker's publishing path
# ------------------------------------------------------------------------------------------
def _setup(n: int) -> list[dict[str, Any]]:
    import django
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.management import call_command

    django.setup()
    call_command("migrate", interactive=False, verbosity=0)
    from webapp.accounts.models import User
    from webapp.library.models import ModelDeployment
    from webapp.playground.models import Conversation, Message, Run, RunStatus

    deployment, _ = ModelDeployment.objects.get_or_create(
        name="bench",
        defaults=dict(
            hf_id_or_path="bench",
            model_type="llama",
            hidden_size=8,
            num_layers=1,
            mlp_size=8,
            vocab_size=8,
            queue_name="model.bench",
        ),
    )
    streams = []
    tag = uuid.uuid4().hex[:8]
    for i in range(n):
        user = User.objects.create_user(username=f"bench-{tag}-{i}", password=None)
        conv = Conversation.objects.create(owner=user, deployment=deployment)
        message = Message.objects.create(conversation=conv, role="user", content="hi")
        run = Run.objects.create(
            conversation=conv,
            user=user,
            deployment=deployment,
            prompt_message=message,
            status=RunStatus.RUNNING,
            attempt=1,
        )
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        streams.append(
            {
                "conv": conv.pk,
                "run": run.pk,
                "cookie": f"{settings.SESSION_COOKIE_NAME}={session.session_key}",
            }
        )
    return streams


def _publish(streams: list[dict[str, Any]], seconds: float, rate: float) -> tuple[int, float]:
    """Emit the events on schedule; (events sent, seconds from the first to the last)."""
    from channels.layers import get_channel_layer

    from webapp.playground.execution import EventSink
    from workers.host import EngineHost

    host = EngineHost(get_channel_layer())
    sinks = [EventSink(host, s["run"], s["conv"], attempt=1) for s in streams]
    period = 1.0 / rate
    n = len(sinks)
    start = time.monotonic() + 0.5  # imports and the host's loop are up before the clock starts
    sent = 0
    # Every stream ticks at ``rate``, phases spread evenly: a steady 1000 events/s in all.
    ticks = int(seconds * rate)
    for k in range(ticks):
        for i, sink in enumerate(sinks):
            due = start + k * period + i * period / n
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sink.emit("token", index=k, token_id=k % 100, text="x", logprob=-1.0, t=time.time())
            sent += 1
    elapsed = time.monotonic() - start
    for sink in sinks:
        sink.emit("finished", status="done", reason="length", text="", error="", t=time.time())
    sinks[0].writer.flush()
    time.sleep(1.0)
    host.shutdown()
    return sent, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layer", choices=("pubsub", "core"), default="pubsub")
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--rate", type=float, default=20.0, help="events per second per stream")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--client", help=argparse.SUPPRESS)  # internal: run as the client process
    args = parser.parse_args()
    if args.client:
        port, path = args.client.split(":", 1)
        asyncio.run(_client_main(int(port), json.loads(Path(path).read_text())))
        return

    _ensure_database()
    env = _env(args.layer, f"bench{uuid.uuid4().hex[:8]}")
    os.environ.update(env)
    streams = _setup(args.streams)
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "webapp.asgi:application",
            "--port",
            str(port),
            "--ws",
            "websockets",
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=ROOT,
        env={**os.environ, **env},
        start_new_session=True,
    )
    spec = Path(f"/tmp/steerlab-stream-latency-{port}.json")
    spec.write_text(json.dumps(streams))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the ASGI server did not start") from None
                time.sleep(0.2)
        client = subprocess.Popen(
            [sys.executable, __file__, "--client", f"{port}:{spec}"],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            text=True,
        )
        assert client.stdout is not None
        print("waiting for the clients", file=sys.stderr, flush=True)
        if client.stdout.readline().strip() != "READY":
            raise SystemExit("the client process did not get ready")
        sent, elapsed = _publish(streams, args.seconds, args.rate)
        stats_line = client.stdout.readline().strip()
        client.wait(timeout=120)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        spec.unlink(missing_ok=True)
    stats = json.loads(stats_line.removeprefix("STATS "))
    lat = sorted(stats["latencies"])
    expected = sent + len(streams)  # tokens + one finished frame each
    lost = expected - stats["received"]
    p50 = statistics.median(lat)
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    print(
        f"layer={args.layer} streams={len(streams)} sent={sent} in {elapsed:.1f}s "
        f"p90_ms={lat[int(0.9 * len(lat))]:.2f} max_ms={lat[-1]:.2f}"
    )
    print(
        f"RESULT p50_ms={p50:.2f} p99_ms={p99:.2f} streams={len(streams)} events={stats['received']} "
        f"lost={lost} dup={stats['dup']} rate={sent / elapsed:.0f}"
    )


if __name__ == "__main__":
    main()
