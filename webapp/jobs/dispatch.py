"""Dispatch a queued job: Celery on its deployment's queue, or (embedded default) a thread here."""

from __future__ import annotations

from django.conf import settings

from webapp.jobs.models import Job


def dispatch_job(job_id: int) -> None:
    """Hand ``job_id`` to a worker (called on commit: the job row exists before the task)."""
    if settings.CELERY_BROKER_URL:
        from webapp.jobs.tasks import execute_job_task

        queue = Job.objects.filter(pk=job_id).values_list("deployment__queue_name", flat=True).first()
        if queue is not None:
            execute_job_task.apply_async((job_id,), queue=queue)
    else:
        from webapp.jobs.runner import execute_job
        from webapp.playground.dispatch import run_embedded

        run_embedded("job", job_id, requeue_expired_jobs, execute_job)


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
