"""Boards: create, share, add and remove probes, evaluate (a job), read results and traces.

A board is shared like a library object (owner, team, visibility): who can see it sees its
results; editors (its owner, or owners/members of its team when shared) change its probes and
start evaluations. A probe can be added by anyone who can see it and edit the board; from then on
the board's viewers see its name and metrics on that board (the adder chose to show it there).
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction

from webapp.accounts.models import Team, User
from webapp.compare.evaluation import example_trace
from webapp.compare.models import Board, BoardProbe, Pooling
from webapp.jobs import services as jobs
from webapp.jobs.models import Job, JobKind, JobStatus
from webapp.library import services as library
from webapp.library.models import DatasetKind, ModelDeployment, Probe

log = logging.getLogger(__name__)

MAX_BOARD_PROBES = 256


def _require_edit(user: User, board: Board) -> None:
    if not library.can_edit(user, board):
        raise PermissionDenied("You cannot change this board.")


@transaction.atomic
def create_board(
    user: User,
    deployment: ModelDeployment,
    *,
    name: str,
    dataset_id: int,
    positive_label: str | None = None,
    pooling: str = "last",
    probe_ids: list[int] | None = None,
    description: str = "",
    team: Team | None = None,
    visibility: str = "private",
) -> Board:
    dataset = jobs.visible_dataset(user, dataset_id, DatasetKind.LABELLED)
    _, positive = jobs.binary_labels(dataset, positive_label)
    if pooling not in Pooling.values:
        raise ValidationError({"pooling": ["last or mean"]})
    board = Board.objects.create(
        owner=user,
        team=team,
        visibility=library.check_sharing(user, team, visibility),
        name=library.clean_name(name),
        description=description,
        deployment=deployment,
        dataset=dataset,
        positive_label=positive,
        pooling=pooling,
    )
    if probe_ids:
        add_probes(user, board, probe_ids)
    log.info("compare.board_created", extra={"board": board.pk, "user_id": user.pk})
    return board


@transaction.atomic
def add_probes(user: User, board: Board, probe_ids: list[int]) -> Board:
    """Add probes (anyone's that ``user`` can see, of the board's deployment); known ones are kept."""
    _require_edit(user, board)
    probes = jobs.visible_probes(user, board.deployment, probe_ids)
    present = set(board.entries.values_list("probe_id", flat=True))
    new = [p for p in probes if p.pk not in present]
    if len(present) + len(new) > MAX_BOARD_PROBES:
        raise ValidationError({"probe_ids": [f"a board compares at most {MAX_BOARD_PROBES} probes"]})
    BoardProbe.objects.bulk_create([BoardProbe(board=board, probe=p, added_by=user) for p in new])
    board.save(update_fields=["updated_at"])
    return board


@transaction.atomic
def remove_probe(user: User, board: Board, probe_id: int) -> None:
    _require_edit(user, board)
    if not board.entries.filter(probe_id=probe_id).delete()[0]:
        raise Probe.DoesNotExist
    board.save(update_fields=["updated_at"])


def board_probes(board: Board) -> list[Probe]:
    return [e.probe for e in board.entries.select_related("probe__owner", "probe__deployment")]


@transaction.atomic
def evaluate(user: User, board: Board) -> Job:
    """Start an evaluation of every probe on the board (results are the job's)."""
    _require_edit(user, board)
    probes = board_probes(board)
    if not probes:
        raise ValidationError({"probe_ids": ["add at least one probe before evaluating"]})
    dataset = board.dataset
    _, positive = jobs.binary_labels(dataset, board.positive_label)
    params = {
        "dataset_hash": dataset.content_hash,
        "positive_label": positive,
        "pooling": board.pooling,
        "probes": jobs.probe_refs(probes),
    }
    return jobs.create_job(
        user,
        board.deployment,
        JobKind.EVALUATE,
        f"evaluate {board.name}"[:100],
        params,
        team=board.team,
        visibility=board.visibility,
        dataset=dataset,
        board=board,
    )


def latest_evaluation(board: Board) -> Job | None:
    """The board's newest finished evaluation (its results), or None."""
    return (
        board.jobs.filter(kind=JobKind.EVALUATE, status=JobStatus.DONE)
        .order_by("-finished_at", "-id")
        .first()
    )


def trace(board: Board, example: int) -> dict[str, Any]:
    """One example's per-token scores from the latest evaluation, with its text and tokens."""
    from webapp.playground.services import tokenizer_for

    job = latest_evaluation(board)
    if job is None:
        raise ValidationError("The board has no finished evaluation yet.")
    if not 0 <= example < job.result.get("n", 0):
        raise Job.DoesNotExist
    batch_size = int(job.result["batch_size"])
    index = example // batch_size
    blobs = {b.index: bytes(b.data) for b in job.batches.filter(index=index)}
    tokens, scores = example_trace(blobs, batch_size, example)
    row = job.dataset.rows[example] if job.dataset is not None and example < len(job.dataset.rows) else {}
    tokenizer = tokenizer_for(board.deployment)
    return {
        "example": example,
        "text": row.get("text", ""),
        "label": row.get("label", ""),
        "tokens": [tokenizer.decode([t]) for t in tokens],
        "probes": [p["public_id"] for p in job.result["probes"]],
        "scores": [[round(float(v), 4) for v in column] for column in scores.T.tolist()],
    }


def delete_board(user: User, board: Board) -> None:
    """Delete a board with its evaluations (its probes and dataset stay in the library)."""
    _require_edit(user, board)
    board.delete()
    log.info("compare.board_deleted", extra={"board": board.pk, "user_id": user.pk})
