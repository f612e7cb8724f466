"""Celery tasks: thin, idempotent wrappers of the playground's services.

Tasks live with the app whose services they call (workers never import webapp; the Celery app
in ``workers.celery_app`` finds them by autodiscovery).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from django.conf import settings
from django.db import close_old_connections

from webapp.playground.dispatch import requeue_expired_runs
from webapp.playground.execution import execute_run
from webapp.playground.hosting import get_host
from workers.celery_app import app  # noqa: F401  (the tasks bind to Steerlab's Celery app)
from workers.drain import refuse_if_draining

log = logging.getLogger(__name__)


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=8,
    time_limit=settings.STEERLAB_RUN_TIME_LIMIT + 30,
    soft_time_limit=settings.STEERLAB_RUN_TIME_LIMIT,
)
def execute_run_task(self: Any, run_id: int) -> str:
    """Execute ``run_id`` (ids only; a finished run is never re-run)."""
    refuse_if_draining()  # SIGTERM: this worker takes no new work
    outcome = execute_run(int(run_id), get_host())
    if outcome.status == "busy":
        # Redelivered while the previous worker's lease still runs: look again once it expires.
        raise self.retry(countdown=outcome.retry_in)
    return outcome.status


@shared_task(acks_late=True, ignore_result=True)
def reap_runs_task() -> list[int]:
    """Re-queue or fail runs and jobs whose heartbeat lease expired; dispatch the re-queued ones."""
    from webapp.jobs.dispatch import requeue_expired_jobs

    try:
        requeue_expired_jobs()
        return requeue_expired_runs()
    finally:
        close_old_connections()
