"""Jobs and comparison boards over HTTP.

Starting a job returns it at once (status ``queued``); its progress streams on ``/ws/jobs/``
and is persisted on the job. Jobs and boards follow the library's rules: a hidden one is a 404,
an edit the user may not make on one they can see is a 403.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.core.handlers.asgi import ASGIRequest
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from ninja import Router, Schema, Status
from ninja.pagination import paginate

from webapp.api.library import DENIED, DetailOut, DetailsIn, OwnedOut, _search, _team, _user, _visible
from webapp.api.pagination import BoundedLimitOffsetPagination
from webapp.compare import services as boards
from webapp.compare.models import Board, Pooling
from webapp.jobs import services
from webapp.jobs.models import Job, JobKind, JobStatus
from webapp.library import services as library
from webapp.library.models import Point, Visibility

router = Router(tags=["jobs"])


class JobOut(OwnedOut):
    description: str = ""  # jobs are described by their kind and parameters
    deployment: str
    kind: JobKind
    status: JobStatus
    attempt: int
    done_batches: int
    total_batches: int
    error: str
    params: dict[str, Any]
    result: dict[str, Any]
    dataset_id: int | None
    board_id: int | None
    vector_id: int | None
    probe_id: int | None
    started_at: datetime | None
    finished_at: datetime | None

    @staticmethod
    def resolve_deployment(obj: Job) -> str:
        return obj.deployment.name


class StartIn(Schema):
    """What every start request names: the deployment, and who may see what it makes."""

    deployment: str
    visibility: Visibility = Visibility.PRIVATE
    team: int | None = None


class BuildVectorIn(StartIn):
    dataset_id: int
    name: str
    layers: list[int]
    method: str = "mean_diff"
    reduce: str = "last"


class TrainProbeIn(StartIn):
    dataset_id: int
    name: str
    layer: int
    point: Point = Point.RESID_POST
    reduce: str = "last"
    positive_label: str | None = None
    heldout_fraction: float = 0.2
    l2: float = 1e-3
    seed: int = 0


class SweepIn(StartIn):
    vector_id: int
    name: str
    layers: list[int]
    scales: list[float]
    prompts: list[str]
    probe_ids: list[int] = []
    max_new_tokens: int = 32
    normalize: str = "none"
    positions: str = "all"
    seed: int = 0


class OverrideIn(Schema):
    """A write's slider position for every prompt of a batch run (as a chat turn's overrides)."""

    index: int
    scale: float | None = None
    enabled: bool | None = None


class BatchRunIn(StartIn):
    dataset_id: int  # a labelled dataset: each row's text is a prompt, its label is carried along
    name: str
    recipe_id: int | None = None  # None: the plain model
    version: int | None = None  # the recipe's version number (default: its latest)
    max_new_tokens: int = 128
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int | None = None  # row i is sampled with seed (seed + i) mod 2**31; None: a random seed
    stop: list[str] = []  # stop sequences (up to 4): each answer ends before the first, as a chat turn's
    overrides: list[OverrideIn] = []
    reads: bool = True  # keep each probe's per-token scores and each logit lens' top-k


class TranscriptOut(Schema):
    prompt: str
    baseline: str
    text: str
    kl: list[float]
    probe_means: list[float | None]
    baseline_probe_means: list[float | None]


# --------------------------------------------------------------------------------------------
# Jobs
# --------------------------------------------------------------------------------------------
def _jobs(request: HttpRequest) -> QuerySet[Any]:
    return _visible(request, Job).select_related("deployment")


@router.get("/jobs", response=list[JobOut])
@paginate(BoundedLimitOffsetPagination)
def list_jobs(request: HttpRequest, kind: str | None = None, q: str | None = None) -> QuerySet[Any]:
    """Jobs you can see, newest first; ``kind`` one of build_vector, train_probe, evaluate, sweep,
    batch_run."""
    jobs = _jobs(request)
    return _search(jobs.filter(kind=kind) if kind else jobs, q)


def _start(request: HttpRequest, payload: StartIn, start: Callable[..., Any]) -> Status[object]:
    """Call a service that starts something: the payload's fields are its keyword arguments, with
    the deployment looked up by name and the team checked for the user."""
    user = _user(request)
    fields = payload.model_dump(exclude={"deployment", "team", "visibility"})
    made = start(
        user,
        library.deployment_named(payload.deployment),
        team=_team(user, payload.team),
        visibility=payload.visibility,
        **fields,
    )
    return Status(201, made)


@router.post("/jobs/build-vector", response={201: JobOut, **DENIED})
def build_vector(request: HttpRequest, payload: BuildVectorIn) -> Status[object]:
    return _start(request, payload, services.build_vector)


@router.post("/jobs/train-probe", response={201: JobOut, **DENIED})
def train_probe(request: HttpRequest, payload: TrainProbeIn) -> Status[object]:
    return _start(request, payload, services.train_probe)


@router.post("/jobs/sweep", response={201: JobOut, **DENIED})
def sweep(request: HttpRequest, payload: SweepIn) -> Status[object]:
    return _start(request, payload, services.sweep)


@router.post("/jobs/batch-run", response={201: JobOut, **DENIED, 429: DetailOut})
def batch_run(request: HttpRequest, payload: BatchRunIn) -> Status[object]:
    """A recipe (or none) applied to every prompt of a labelled dataset, as one resumable job."""
    return _start(request, payload, services.batch_run)


@router.get("/jobs/{job_id}", response={200: JobOut, 404: DetailOut})
def get_job(request: HttpRequest, job_id: int) -> Job:
    return services.get_job(_user(request), job_id)


@router.post("/jobs/{job_id}/cancel", response={200: JobOut, **DENIED})
def cancel_job(request: HttpRequest, job_id: int) -> Job:
    user = _user(request)
    return services.cancel_job(user, services.get_job(user, job_id))


@router.post("/jobs/{job_id}/resume", response={200: JobOut, **DENIED})
def resume_job(request: HttpRequest, job_id: int) -> Job:
    user = _user(request)
    return services.resume_job(user, services.get_job(user, job_id))


@router.get("/jobs/{job_id}/cells/{cell}/transcripts", response={200: list[TranscriptOut], **DENIED})
def get_transcripts(request: HttpRequest, job_id: int, cell: int) -> Any:
    """A finished sweep cell's texts (``cell`` indexes ``result.cells``), beside the baseline."""
    return services.cell_transcripts(services.get_job(_user(request), job_id), cell)


@router.get("/jobs/{job_id}/results.jsonl", response={200: bytes, **DENIED})
def batch_results_jsonl(request: HttpRequest, job_id: int) -> StreamingHttpResponse:
    """A finished batch run's results as JSON Lines, streamed: one object per prompt, by row index
    (index, prompt, label, prompt_tokens, seed, tokens, text, finish_reason, logprobs, reads)."""
    job = services.get_job(_user(request), job_id)
    lines = services.batch_jsonl(job, asynchronous=isinstance(request, ASGIRequest))
    response = StreamingHttpResponse(lines, content_type="application/x-ndjson")
    response["Content-Disposition"] = f'attachment; filename="batch-{job.pk}.jsonl"'
    return response


@router.get("/jobs/{job_id}/results.parquet", response={200: bytes, **DENIED})
def batch_results_parquet(request: HttpRequest, job_id: int) -> HttpResponse:
    """A finished batch run's results as one Parquet file: a row per prompt, list columns for the
    tokens, logprobs and each read; the job's model, recipe and sampling in the file's metadata."""
    job = services.get_job(_user(request), job_id)
    data = services.batch_parquet(job)
    response = HttpResponse(data, content_type="application/vnd.apache.parquet")
    response["Content-Disposition"] = f'attachment; filename="batch-{job.pk}.parquet"'
    return response


@router.get("/jobs/{job_id}/export", response={200: bytes, **DENIED})
def export_batch_run(request: HttpRequest, job_id: int) -> HttpResponse:
    """A finished batch run as one zip that redoes it: manifest.json (model, recipe, seed and seed
    rule, overrides, engines), the prompts, the results and the vectors and probes (safetensors)."""
    name, data = services.export_batch_run(_user(request), services.get_job(_user(request), job_id))
    response = HttpResponse(data, content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


# --------------------------------------------------------------------------------------------
# Boards
# --------------------------------------------------------------------------------------------
class BoardIn(StartIn):
    name: str
    dataset_id: int
    positive_label: str | None = None
    pooling: Pooling = Pooling.LAST
    probe_ids: list[int] = []
    description: str = ""


class BoardOut(OwnedOut):
    deployment: str
    dataset_id: int
    dataset_name: str
    positive_label: str
    pooling: Pooling
    probe_ids: list[int]

    @staticmethod
    def resolve_deployment(obj: Board) -> str:
        return obj.deployment.name

    @staticmethod
    def resolve_dataset_name(obj: Board) -> str:
        return obj.dataset.name

    @staticmethod
    def resolve_probe_ids(obj: Board) -> list[int]:
        return list(obj.entries.values_list("probe_id", flat=True))


class BoardDetailOut(BoardOut):
    evaluation: JobOut | None  # the newest finished evaluation: the board's results
    latest_job: JobOut | None  # the newest evaluation job, whatever its state (progress)

    @staticmethod
    def resolve_evaluation(obj: Board) -> Job | None:
        return boards.latest_evaluation(obj)

    @staticmethod
    def resolve_latest_job(obj: Board) -> Job | None:
        return obj.jobs.select_related("deployment", "owner").order_by("-created_at", "-id").first()


class ProbeIdsIn(Schema):
    probe_ids: list[int]


class TraceOut(Schema):
    example: int
    text: str
    label: str
    tokens: list[str]
    probes: list[str]
    scores: list[list[float]]  # per probe (the board's order), per token


def _board(request: HttpRequest, board_id: int) -> Board:
    return library.get_visible(_user(request), Board, board_id)


@router.get("/boards", response=list[BoardOut])
@paginate(BoundedLimitOffsetPagination)
def list_boards(request: HttpRequest, q: str | None = None) -> QuerySet[Any]:
    return _search(_visible(request, Board).select_related("deployment", "dataset"), q)


@router.post("/boards", response={201: BoardDetailOut, **DENIED})
def create_board(request: HttpRequest, payload: BoardIn) -> Status[object]:
    return _start(request, payload, boards.create_board)


@router.get("/boards/{board_id}", response={200: BoardDetailOut, 404: DetailOut})
def get_board(request: HttpRequest, board_id: int) -> Board:
    return _board(request, board_id)


@router.patch("/boards/{board_id}", response={200: BoardDetailOut, **DENIED})
def update_board(request: HttpRequest, board_id: int, payload: DetailsIn) -> Board:
    user = _user(request)
    return library.update_details(
        user,
        _board(request, board_id),
        description=payload.description,
        visibility=payload.visibility,
        team=_team(user, payload.team),
    )


@router.delete("/boards/{board_id}", response={204: None, **DENIED})
def delete_board(request: HttpRequest, board_id: int) -> Status[object]:
    boards.delete_board(_user(request), _board(request, board_id))
    return Status(204, None)


@router.post("/boards/{board_id}/probes", response={200: BoardDetailOut, **DENIED})
def add_probes(request: HttpRequest, board_id: int, payload: ProbeIdsIn) -> Board:
    return boards.add_probes(_user(request), _board(request, board_id), payload.probe_ids)


@router.delete("/boards/{board_id}/probes/{probe_id}", response={204: None, **DENIED})
def remove_probe(request: HttpRequest, board_id: int, probe_id: int) -> Status[object]:
    boards.remove_probe(_user(request), _board(request, board_id), probe_id)
    return Status(204, None)


@router.post("/boards/{board_id}/evaluate", response={201: JobOut, **DENIED})
def evaluate_board(request: HttpRequest, board_id: int) -> Status[object]:
    return Status(201, boards.evaluate(_user(request), _board(request, board_id)))


@router.get("/boards/{board_id}/traces/{example}", response={200: TraceOut, **DENIED})
def get_trace(request: HttpRequest, board_id: int, example: int) -> dict[str, Any]:
    """One evaluation example's per-token scores for every probe on the board."""
    return boards.trace(_board(request, board_id), example)
