"""Dispatch a queued job: Celery on its deployment's queue, or (embedded default) a thread here."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import close_old_connections, connections

from webapp.jobs.models import Job

log = logging.getLogger(__name__)


def dispatch_job(job_id: int) -> None:
    """Hand ``job_id`` to a worker (called on commit: the job row exists before the task)."""
    if settings.CELERY_BROKER_URL:
        from webapp.jobs.tasks import execute_job_task

        queue = Job.objects.filter(pk=job_id).values_list("deployment__queue_name", flat=True).first()
        if queue is not None:
            execute_job_task.apply_async((job_id,), queue=queue)
    else:
        from webapp.playground.dispatch import embedded_pool

        embedded_pool().submit(_run_embedded, job_id)


def requeue_expired_jobs() -> list[int]:
    """Re-queue (or fail) jobs whose worker stopped renewing its lease; dispatch the re-queued."""
    from webapp import leases

    requeued = leases.reap(
        Job,
        max_attempts=settings.STEERLAB_JOB_MAX_ATTEMPTS,
        failed={"error": "its worker stopped answering (attempt {attempt} of {attempt})"},
    )
    for job_id in requeued:
        dispatch_job(job_id)
    return requeued


def _run_embedded(job_id: int) -> None:
    from webapp.jobs.runner import execute_job
    from webapp.playground.hosting import get_host

    close_old_connections()
    try:
        requeue_expired_jobs()  # the embedded stack has no worker reaper: each job start reaps
        outcome = execute_job(job_id, get_host())
        log.info("jobs.executed", extra={"job": job_id, "outcome": outcome.status})
    except Exception:
        log.exception("jobs.embedded_failed", extra={"job": job_id})
    finally:
        connections.close_all()
