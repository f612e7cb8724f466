"""Dispatch a queued run: Celery on the deployment's queue, or (embedded default) a thread here."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import close_old_connections, connections

from webapp.playground.models import Run

log = logging.getLogger(__name__)

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def dispatch_run(run_id: int) -> None:
    """Hand ``run_id`` to a worker (called on commit: the run row exists before the task)."""
    if settings.CELERY_BROKER_URL:
        from webapp.playground.tasks import execute_run_task

        queue = Run.objects.filter(pk=run_id).values_list("deployment__queue_name", flat=True).first()
        if queue is None:
            return
        execute_run_task.apply_async((run_id,), queue=queue)
    else:
        embedded_pool().submit(_run_embedded, run_id)


def requeue_expired_runs() -> list[int]:
    """Reap runs whose heartbeat lease expired and dispatch those re-queued for another attempt."""
    from webapp.playground.execution import reap_expired_runs

    requeued = reap_expired_runs()
    for run_id in requeued:
        dispatch_run(run_id)
    return requeued


def embedded_pool() -> ThreadPoolExecutor:
    """The embedded dispatcher's threads (runs and jobs)."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=settings.STEERLAB_ENGINE_MAX_REQUESTS, thread_name_prefix="steerlab-run"
            )
        return _executor


def _run_embedded(run_id: int) -> None:
    """The embedded dispatcher: the same ``execute_run`` the Celery task calls, in this process."""
    from webapp.playground.execution import execute_run
    from webapp.playground.hosting import get_host

    close_old_connections()
    try:
        requeue_expired_runs()  # the embedded stack has no worker reaper: each run start reaps
        outcome = execute_run(run_id, get_host())
        log.info("playground.run_executed", extra={"run": run_id, "outcome": outcome.status})
    except Exception:
        log.exception("playground.embedded_run_failed", extra={"run": run_id})
    finally:
        connections.close_all()  # pool threads are reused: never keep a connection across runs
