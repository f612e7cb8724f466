"""Celery tasks of jobs: thin, idempotent wrappers (ids only; a finished job is never re-run)."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.exceptions import Reject
from django.conf import settings

from webapp.jobs.runner import execute_job
from webapp.playground.hosting import get_host
from workers.celery_app import app  # noqa: F401  (the tasks bind to Steerlab's Celery app)
from workers.drain import refuse_if_draining


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=8,
    time_limit=settings.STEERLAB_JOB_TIME_LIMIT + 30,
    soft_time_limit=settings.STEERLAB_JOB_TIME_LIMIT,
)
def execute_job_task(self: Any, job_id: int) -> str:
    refuse_if_draining()  # SIGTERM: this worker takes no new work
    outcome = execute_job(int(job_id), get_host())
    if outcome.status == "busy":
        raise self.retry(countdown=outcome.retry_in)
    if outcome.status == "handed_back":
        # This worker is draining (SIGTERM): the message returns to the queue for another worker.
        raise Reject("the worker is draining", requeue=True)
    return outcome.status
