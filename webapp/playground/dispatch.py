"""Dispatch a queued run: Celery on the deployment's queue, or (embedded default) a thread here."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

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
        from webapp.playground.execution import execute_run

        run_embedded("run", run_id, requeue_expired_runs, execute_run)


def requeue_expired_runs() -> list[int]:
    """Reap runs whose heartbeat lease expired and dispatch those re-queued for another attempt."""
    from webapp.playground.execution import reap_expired_runs

    requeued = reap_expired_runs()
    for run_id in requeued:
        dispatch_run(run_id)
    return requeued


def run_embedded(what: str, pk: int, reap: Callable[[], object], execute: Callable[[int, Any], Any]) -> None:
    """Submit ``execute(pk, host)`` to the embedded dispatcher's threads (runs and jobs): the same
    service the Celery task calls, in this process. The embedded stack has no worker reaper, so
    each start reaps first (``reap``)."""

    def work() -> None:
        from webapp.playground.hosting import get_host

        close_old_connections()
        try:
            reap()
            outcome = execute(pk, get_host())
            log.info(f"{what}.executed", extra={what: pk, "outcome": outcome.status})
        except Exception:
            log.exception(f"{what}.embedded_failed", extra={what: pk})
        finally:
            connections.close_all()  # pool threads are reused: never keep a connection across work

    _pool().submit(work)


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=settings.STEERLAB_ENGINE_MAX_REQUESTS, thread_name_prefix="steerlab-run"
            )
        return _executor
