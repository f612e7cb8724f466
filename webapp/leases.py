"""Heartbeat leases on work rows (runs and jobs): claim, renew, release, reap.

A row that a worker executes has ``status`` (queued / running / ...), ``attempt``, ``lease_owner``,
``lease_expires_at`` and ``started_at``. A worker claims a queued row (or a running row whose lease
expired: its worker died) as its next attempt with one conditional UPDATE, so two workers never
both win; it renews the lease while it works; a reaper re-queues (while attempts remain) or fails
rows whose lease expired. With a threads pool ``reject_on_worker_lost`` does nothing: the lease is
what catches a dead worker (docs/design.md §7).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.db.models import F, Model
from django.utils import timezone

log = logging.getLogger(__name__)

QUEUED, RUNNING, FAILED = "queued", "running", "failed"


class LeaseLost(Exception):
    """Another worker (or the reaper, or a cancel) took the row over: stop without writing."""


def lease_until(seconds: float) -> Any:
    return timezone.now() + timedelta(seconds=seconds)


def claim(
    model: type[Model],
    pk: int,
    worker: str,
    *,
    lease_seconds: float,
    max_attempts: int,
    exhausted: dict[str, Any],
) -> int | None:
    """Take row ``pk`` for ``worker``; its new attempt number, or None when it is not ours to run.

    ``exhausted``: the failure fields written when a re-queued row has no attempt left (it is
    ended rather than left queued for ever).
    """
    now = timezone.now()
    rows = model._default_manager
    changes = {
        "status": RUNNING,
        "attempt": F("attempt") + 1,
        "lease_owner": worker,
        "lease_expires_at": lease_until(lease_seconds),
        "started_at": now,
    }
    claimed = rows.filter(pk=pk, status=QUEUED, attempt__lt=max_attempts).update(**changes)
    if not claimed:
        claimed = rows.filter(
            pk=pk, status=RUNNING, lease_expires_at__lt=now, attempt__lt=max_attempts
        ).update(**changes)
    if not claimed:
        if rows.filter(pk=pk, status=QUEUED, attempt__gte=max_attempts).update(
            status=FAILED, finished_at=now, **exhausted
        ):
            log.warning("lease.attempts_exhausted", extra={"model": model.__name__, "id": pk})
        return None
    return int(rows.filter(pk=pk).values_list("attempt", flat=True).get())


def state(model: type[Model], pk: int) -> tuple[str, float] | None:
    """(status, seconds until the lease expires) of a row, or None if it does not exist."""
    row = model._default_manager.filter(pk=pk).values_list("status", "lease_expires_at").first()
    if row is None:
        return None
    status, expires = row
    left = (expires - timezone.now()).total_seconds() if expires is not None else 0.0
    return status, left


def refusal(model: type[Model], pk: int, what: str) -> tuple[str, str, float]:
    """Why ``claim`` returned None, as (status, detail, retry in seconds): ``busy`` while another
    live worker's lease runs (look again when it expires), else ``skipped``."""
    current = state(model, pk)
    if current is not None and current[0] == RUNNING:
        return "busy", f"another worker holds the {what}", max(current[1], 0.0) + 0.5
    return "skipped", f"not claimable ({current[0] if current else 'gone'})", 0.0


def renew(model: type[Model], pk: int, worker: str, attempt: int, lease_seconds: float) -> None:
    renewed = model._default_manager.filter(
        pk=pk, status=RUNNING, lease_owner=worker, attempt=attempt
    ).update(lease_expires_at=lease_until(lease_seconds))
    if not renewed:
        raise LeaseLost(f"{model.__name__.lower()} {pk} attempt {attempt} is no longer held by {worker}")


def release(model: type[Model], pk: int, worker: str, attempt: int) -> bool:
    """Hand a held row back to the queue (its worker is draining); False if it was no longer held.

    The row is queued again with its lease dropped, and the attempt it used is given back: a
    drain is not a failure, and must not use up the attempts that catch workers that die.
    """
    return bool(
        model._default_manager.filter(pk=pk, status=RUNNING, lease_owner=worker, attempt=attempt).update(
            status=QUEUED, attempt=F("attempt") - 1, lease_owner="", lease_expires_at=None
        )
    )


def reap(model: type[Model], *, max_attempts: int, failed: dict[str, Any]) -> list[int]:
    """Re-queue (while attempts remain) or fail running rows whose lease expired.

    ``failed``: the fields written on a row that has no attempt left (``{attempt}`` in a string
    value is replaced by its attempt number). Returns the ids of re-queued rows: the caller
    dispatches them again.
    """
    now = timezone.now()
    rows = model._default_manager
    requeued: list[int] = []
    for pk, attempt in rows.filter(status=RUNNING, lease_expires_at__lt=now).values_list("pk", "attempt"):
        expired = rows.filter(pk=pk, status=RUNNING, lease_expires_at__lt=now)
        if attempt < max_attempts:
            if expired.update(status=QUEUED, lease_owner="", lease_expires_at=None):
                requeued.append(pk)
                log.warning("lease.requeued", extra={"model": model.__name__, "id": pk, "attempt": attempt})
        else:
            fields = {k: v.format(attempt=attempt) if isinstance(v, str) else v for k, v in failed.items()}
            if expired.update(status=FAILED, finished_at=now, **fields):
                log.warning("lease.expired", extra={"model": model.__name__, "id": pk, "attempt": attempt})
    return requeued
