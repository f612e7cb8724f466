"""Draining this worker process: once asked to stop (SIGTERM), it takes no new work.

Celery's answer to SIGTERM is a warm shutdown: it stops consuming from the broker and waits for
the tasks already running. Runs are short (bounded by their new-token limit and
``STEERLAB_RUN_TIME_LIMIT``), so they finish; a job (hours, in batches) checks ``draining()``
between batches and hands itself back to the queue, for another worker to resume from its stored
batches. ``begin`` is called from the signal handler: it only sets a flag.
"""

from __future__ import annotations

import time

from celery.exceptions import Reject

# How long a task delivered during the drain is held before it goes back to the queue.
REFUSAL_HOLD_SECONDS = 1.0

_since: float | None = None


def begin() -> None:
    global _since
    if _since is None:
        _since = time.monotonic()


def draining() -> bool:
    return _since is not None


def refuse_if_draining() -> None:
    """Called first by every task: one delivered after SIGTERM goes back to the queue untouched.

    Celery's consumer loop still reads from the broker for up to two of its 2-second cycles after
    the signal, so a task can arrive then. Holding it a moment before the reject keeps the broker
    from handing it straight back to this (still subscribed) consumer in a tight loop.
    """
    if draining():
        time.sleep(REFUSAL_HOLD_SECONDS)
        raise Reject("this worker is draining", requeue=True)
