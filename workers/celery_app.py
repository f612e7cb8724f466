"""The Celery app: configured from Django settings (``CELERY_*``), RabbitMQ as the broker.

Start a worker for one model deployment (one process per GPU, concurrency inside it: threads,
never fork after the model is loaded)::

    celery -A workers.celery_app worker -P threads -c 32 -Q model.<deployment>

Each worker process hosts one shared engine per model (``webapp.playground.hosting``) and reaps
runs whose heartbeat lease expired, every ``lease / 2`` seconds. It writes a heartbeat to the
shared cache (``workers.heartbeat``: the web's ``/readyz`` counts live workers), serves its
Prometheus metrics when ``STEERLAB_WORKER_METRICS_PORT`` is set, and drains on SIGTERM
(``workers.drain``).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutdown, worker_shutting_down

from workers import drain, heartbeat, metrics

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("steerlab")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Tasks live beside the services they wrap, in the web app's packages.
app.autodiscover_tasks(["webapp.playground", "webapp.jobs"])

_reaper_stop = threading.Event()


def _reap_forever(interval: float) -> None:
    # Run locally, in this process (looked up by name: workers never import the web app).
    reap = app.tasks["webapp.playground.tasks.reap_runs_task"]
    while not _reaper_stop.wait(interval):
        try:
            reap.apply()
        except Exception:  # the database or broker may be briefly away; the next tick tries again
            logging.getLogger(__name__).exception("workers.reap_failed")


@worker_ready.connect
def _start_reaper(sender: Any = None, **_: Any) -> None:
    from django.conf import settings  # type: ignore[import-untyped]

    interval = max(settings.STEERLAB_RUN_LEASE_SECONDS / 2, 1.0)
    threading.Thread(target=_reap_forever, args=(interval,), name="steerlab-reaper", daemon=True).start()


_heartbeat: heartbeat.Heartbeat | None = None


@worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    from django.conf import settings

    global _heartbeat
    task_consumer = getattr(sender, "task_consumer", None)
    queues = sorted(q.name for q in task_consumer.queues) if task_consumer is not None else []
    name = str(getattr(sender, "hostname", ""))
    _heartbeat = heartbeat.Heartbeat(
        lambda: {"name": name, "queues": queues, "draining": drain.draining()},
        float(settings.STEERLAB_WORKER_HEARTBEAT_SECONDS),
    )
    _heartbeat.start()
    metrics.serve(settings.STEERLAB_WORKER_METRICS_PORT)


@worker_shutting_down.connect
def _start_draining(sender: Any = None, **_: Any) -> None:
    # In the signal handler (SIGTERM): Celery stops consuming next; running tasks go on.
    drain.begin()
    if _heartbeat is not None:
        _heartbeat.wake()  # tell readiness at once that this worker takes no new work


@worker_shutdown.connect
def _stop_reaper(sender: Any = None, **_: Any) -> None:
    _reaper_stop.set()
    if _heartbeat is not None:
        _heartbeat.stop()
