"""Rights lost after the fact: every path that runs a model with someone's interventions checks, when
it is dispatched and again when a worker claims it, that its owner can still see every vector,
probe, dataset and recipe it uses (``webapp.library.references``).

The world: alice owns team T and shares a vector, a probe, two datasets and a recipe with it; bob,
a member, forks the recipe and uses alice's objects in his own runs, jobs and board. Then bob loses
them — he is removed from T, or alice makes her objects private — and every entry point is tried
as bob: each refusal names the reference, changes nothing and dispatches nothing. A last test
enumerates the entry points (OpenAPI operations, socket messages, ``/v1`` routes, job kinds, and the
call sites of the dispatchers) and fails when one is added without being covered here.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from channels.layers import InMemoryChannelLayer
from django.test import Client
from support.live import Socket, run_async

from interventions.probes import LinearProbe
from interventions.probes import to_safetensors_bytes as probe_bytes
from interventions.vectors import SteeringVector as Vec
from interventions.vectors import to_safetensors_bytes as vector_bytes
from webapp.accounts import services as accounts
from webapp.accounts.models import User
from webapp.api import openai as openai_api
from webapp.api.api import api
from webapp.asgi import application
from webapp.compare import services as boards
from webapp.jobs import dispatch as job_dispatch
from webapp.jobs import services as jobs
from webapp.jobs.models import Job, JobKind, JobStatus
from webapp.jobs.runner import execute_job
from webapp.library import services as library
from webapp.library.models import Dataset, Probe, RecipeVersion, SteeringVector
from webapp.playground import dispatch as run_dispatch
from webapp.playground import services as playground
from webapp.playground.consumers import ConversationConsumer
from webapp.playground.examples import marker_pairs, marker_rows
from webapp.playground.execution import execute_run
from webapp.playground.models import Conversation, Message, Run, RunStatus
from webapp.sharing.models import ShareLink
from workers.host import EngineHost

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

REVOCATIONS = ("removed from the team", "made private")
SAMPLING = {"max_new_tokens": 4, "temperature": 0.0, "top_p": 1.0, "seed": 7}


@dataclass
class World:
    alice: User
    bob: User
    team: Any
    deployment: Any
    vector: SteeringVector
    probe: Probe
    labelled: Dataset  # alice's, shared with T
    pairs: Dataset  # alice's, shared with T
    fork: RecipeVersion  # bob's private fork of alice's team recipe (it uses her vector and probe)
    conversation: Conversation  # bob's, on the fork
    finished: Run  # bob's finished run on the fork
    bobs_rows: Dataset  # bob's own dataset (so a batch run's only lost input is the recipe's)
    board: Any  # bob's own board, scoring alice's probe on his dataset
    failed_jobs: dict[str, Job] = field(default_factory=dict)  # bob's, one per kind, resumable
    queued_run: Run | None = None  # bob's, queued before he lost access (a worker claims it later)
    queued_jobs: dict[str, Job] = field(default_factory=dict)
    dispatched: list[tuple[str, int]] = field(default_factory=list)

    def names(self) -> set[str]:
        """How a refusal may name what bob lost."""
        return {
            self.vector.public_id,
            self.probe.public_id,
            f"dataset {self.labelled.pk}",
            f"dataset {self.pairs.pk}",
            str(self.labelled.pk),
            str(self.pairs.pk),
        }


@pytest.fixture
def world(
    settings: Any,
    alice: User,
    bob: User,
    team_t: Any,
    tiny_deployment: Any,
    embedded: None,
    monkeypatch: pytest.MonkeyPatch,
) -> World:
    settings.STEERLAB_MAX_ACTIVE_JOBS = 64  # bob holds a queued job of every kind
    dispatched: list[tuple[str, int]] = []
    # Nothing is executed here: the dispatchers only record (a refused entry point records nothing).
    monkeypatch.setattr(run_dispatch, "dispatch_run", lambda pk: dispatched.append(("run", pk)))
    monkeypatch.setattr(job_dispatch, "dispatch_job", lambda pk: dispatched.append(("job", pk)))
    team = {"team": team_t, "visibility": "team"}
    d = tiny_deployment
    g = torch.Generator().manual_seed(0)
    vector = library.upload_vector(
        alice,
        d,
        "alice's",
        "v.safetensors",
        vector_bytes(Vec({1: torch.randn(d.hidden_size, generator=g)})),
        **team,
    )
    probe = library.upload_probe(
        alice,
        d,
        "alice's probe",
        "p.safetensors",
        probe_bytes(LinearProbe(torch.randn(d.hidden_size, generator=g), 0.0)),
        layer=2,
        **team,
    )
    labelled = library.create_dataset_rows(alice, "alice's rows", "labelled", marker_rows(8), **team)
    pairs = library.create_dataset_rows(alice, "alice's pairs", "contrastive", marker_pairs(4), **team)
    spec = {
        "interventions": [
            {"op": "steer", "layer": 1, "vector": vector.public_id, "scale": 2.0},
            {"op": "probe", "layer": 2, "probe": probe.public_id},
        ]
    }
    _, version = library.create_recipe(alice, d, "alice's recipe", spec, **team)
    _, fork = library.fork_recipe(bob, version)
    conversation = playground.create_conversation(bob, d, recipe_version=fork)
    (finished,) = playground.start_turn(bob, conversation, "hello", sampling=playground.Sampling(**SAMPLING))
    Run.objects.filter(pk=finished.pk).update(status=RunStatus.DONE, tokens=[5, 6], text="ok")
    finished.refresh_from_db()
    bobs_rows = library.create_dataset_rows(bob, "bob's rows", "labelled", marker_rows(8, seed=3))
    board = boards.create_board(bob, d, name="bob's board", dataset_id=bobs_rows.pk, probe_ids=[probe.pk])
    w = World(
        alice, bob, team_t, d, vector, probe, labelled, pairs, fork, conversation, finished, bobs_rows, board
    )
    for status, into in ((JobStatus.FAILED, w.failed_jobs), (JobStatus.QUEUED, w.queued_jobs)):
        made = _jobs(w)
        for kind, job in made.items():
            Job.objects.filter(pk=job.pk).update(status=status, error="seeded" if status == "failed" else "")
            job.refresh_from_db()
            into[kind] = job
    (w.queued_run,) = playground.start_turn(
        bob, conversation, "again", sampling=playground.Sampling(**SAMPLING)
    )
    dispatched.clear()
    w.dispatched = dispatched
    return w


def _jobs(w: World) -> dict[str, Job]:
    """One job of bob's of every kind, each using something of alice's."""
    d, bob = w.deployment, w.bob
    return {
        JobKind.BUILD_VECTOR: jobs.build_vector(bob, d, dataset_id=w.pairs.pk, name="v", layers=[1]),
        JobKind.TRAIN_PROBE: jobs.train_probe(bob, d, dataset_id=w.labelled.pk, name="p", layer=1),
        JobKind.EVALUATE: boards.evaluate(bob, w.board),
        JobKind.SWEEP: jobs.sweep(
            bob,
            d,
            vector_id=w.vector.pk,
            name="s",
            layers=[1],
            scales=[1.0],
            prompts=["hi"],
            probe_ids=[w.probe.pk],
        ),
        JobKind.BATCH_RUN: jobs.batch_run(
            bob, d, dataset_id=w.bobs_rows.pk, name="b", recipe_id=w.fork.recipe_id, max_new_tokens=4
        ),
    }


def _revoke(w: World, how: str) -> None:
    if how == "removed from the team":
        accounts.remove_member(w.alice, w.team, w.bob)
    else:
        for obj in (w.vector, w.probe, w.labelled, w.pairs):
            library.set_visibility(w.alice, obj, "private")


def _state() -> tuple[Any, ...]:
    return (
        list(Run.objects.order_by("pk").values_list("pk", "status", "kind")),
        Message.objects.count(),
        Conversation.objects.count(),
        list(Job.objects.order_by("pk").values_list("pk", "status", "attempt", "error")),
        RecipeVersion.objects.count(),
    )


# --------------------------------------------------------------------------------------------
# The entry points, each tried as bob once he has lost alice's objects: (status or code, message)
# --------------------------------------------------------------------------------------------
def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _http(response: Any) -> tuple[Any, str]:
    body = response.json()
    if isinstance(body, dict) and isinstance(body.get("error"), dict):  # /v1: OpenAI's shape
        return response.status_code, body["error"]["message"]
    return response.status_code, json.dumps(body)


def _socket(w: World, ws_headers: Any, **message: Any) -> tuple[Any, str]:
    headers = ws_headers(w.bob)

    async def scenario() -> dict[str, Any]:
        ws = Socket(application, f"/ws/conversations/{w.conversation.pk}/", headers)
        assert (await ws.connect())[0]
        reply = await ws.request(**message)
        assert (await ws.request(type="ping"))["type"] == "pong"  # the socket stays open
        await ws.close()
        return reply

    reply = run_async(scenario())
    assert reply["type"] == "error", reply
    return reply["code"], reply["message"]


def _v1(w: World, **body: Any) -> tuple[Any, str]:
    _, raw = accounts.create_api_token(w.bob, name="script")
    response = Client().post(
        "/v1/chat/completions",
        data={
            "model": w.deployment.name,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 4,
            **body,
        },
        content_type="application/json",
        headers={"Authorization": f"Bearer {raw}"},
    )
    return _http(response)


def _job_api(w: World, path: str, **body: Any) -> tuple[Any, str]:
    return _http(
        _client(w.bob).post(
            path, data={"deployment": w.deployment.name, **body}, content_type="application/json"
        )
    )


def _worker_host() -> Iterator[EngineHost]:
    host = EngineHost(InMemoryChannelLayer())
    try:
        yield host
    finally:
        host.loop.call_soon_threadsafe(host.loop.stop)


def _worker_run(w: World) -> tuple[Any, str]:
    assert w.queued_run is not None
    for host in _worker_host():
        outcome = execute_run(w.queued_run.pk, host)
    run = Run.objects.get(pk=w.queued_run.pk)
    assert outcome.status == run.status == RunStatus.FAILED and run.tokens == []
    return run.status, run.error


def _worker_job(kind: str) -> Callable[[World], tuple[Any, str]]:
    def attempt(w: World) -> tuple[Any, str]:
        job = w.queued_jobs[kind]
        for host in _worker_host():
            outcome = execute_job(job.pk, host)
        job.refresh_from_db()
        assert outcome.status == job.status == JobStatus.FAILED and job.batches.count() == 0
        assert job.vector_id is None and job.probe_id is None
        return job.status, job.error

    return attempt


def _resume(kind: str) -> Callable[[World, Any], tuple[Any, str]]:
    return lambda w, _: _http(_client(w.bob).post(f"/api/jobs/{w.failed_jobs[kind].pk}/resume"))


# Entry points that are refused before anything is written: name -> (attempt, expected status/code).
WEB: dict[str, tuple[Callable[[World, Any], tuple[Any, str]], Any]] = {
    "socket generate": (
        lambda w, h: _socket(w, h, type="generate", content="hi", sampling=SAMPLING),
        "forbidden",
    ),
    "socket generate (compare)": (
        lambda w, h: _socket(w, h, type="generate", content="hi", compare=True, sampling=SAMPLING),
        "forbidden",
    ),
    "socket replay": (lambda w, h: _socket(w, h, type="replay", run=w.finished.pk), "forbidden"),
    "POST /api/runs/{run_id}/replay": (
        lambda w, _: _http(_client(w.bob).post(f"/api/runs/{w.finished.pk}/replay")),
        403,
    ),
    "POST /v1/chat/completions (recipe)": (lambda w, _: _v1(w, recipe=str(w.fork.recipe_id)), 403),
    "POST /v1/chat/completions (inline)": (
        lambda w, _: _v1(w, interventions=[{"op": "probe", "layer": 2, "probe": w.probe.public_id}]),
        400,
    ),
    "POST /api/jobs/batch-run": (
        lambda w, _: _job_api(
            w, "/api/jobs/batch-run", dataset_id=w.bobs_rows.pk, name="b", recipe_id=w.fork.recipe_id
        ),
        403,
    ),
    "POST /api/jobs/sweep": (
        lambda w, _: _job_api(
            w,
            "/api/jobs/sweep",
            vector_id=w.vector.pk,
            name="s",
            layers=[1],
            scales=[1.0],
            prompts=["hi"],
            probe_ids=[],
        ),
        400,
    ),
    "POST /api/jobs/build-vector": (
        lambda w, _: _job_api(w, "/api/jobs/build-vector", dataset_id=w.pairs.pk, name="v", layers=[1]),
        400,
    ),
    "POST /api/jobs/train-probe": (
        lambda w, _: _job_api(w, "/api/jobs/train-probe", dataset_id=w.labelled.pk, name="p", layer=1),
        400,
    ),
    "POST /api/boards/{board_id}/evaluate": (
        lambda w, _: _http(_client(w.bob).post(f"/api/boards/{w.board.pk}/evaluate")),
        403,
    ),
    **{f"POST /api/jobs/{{job_id}}/resume ({kind})": (_resume(kind), 403) for kind in JobKind.values},
}
# Work queued before bob lost access, claimed by a worker afterwards: it fails, naming the reference.
WORKER: dict[str, Callable[[World], tuple[Any, str]]] = {
    "worker: a queued run": _worker_run,
    **{f"worker: a queued {kind} job": _worker_job(kind) for kind in JobKind.values},
}


@pytest.mark.parametrize("how", REVOCATIONS)
@pytest.mark.parametrize("entry", sorted(WEB))
def test_a_web_entry_point_refuses_work_whose_references_were_lost(
    entry: str, how: str, world: World, ws_headers: Any
) -> None:
    attempt, expected = WEB[entry]
    _revoke(world, how)
    before = _state()
    status, message = attempt(world, ws_headers)
    assert status == expected, message
    assert any(name in message for name in world.names()), message
    assert _state() == before
    assert world.dispatched == []


@pytest.mark.parametrize("how", REVOCATIONS)
@pytest.mark.parametrize("entry", sorted(WORKER))
def test_a_worker_refuses_queued_work_whose_references_were_lost(entry: str, how: str, world: World) -> None:
    _revoke(world, how)
    status, message = WORKER[entry](world)
    assert status == "failed"
    assert any(name in message for name in world.names()), message


def test_with_its_references_visible_the_same_work_is_dispatched(world: World, ws_headers: Any) -> None:
    """The control: nothing above is refused for another reason."""
    assert _socket_ok(world, ws_headers)
    assert _client(world.bob).post(f"/api/runs/{world.finished.pk}/replay").status_code == 201
    assert (
        _job_api(
            world,
            "/api/jobs/batch-run",
            dataset_id=world.bobs_rows.pk,
            name="b",
            recipe_id=world.fork.recipe_id,
        )[0]
        == 201
    )
    assert _client(world.bob).post(f"/api/boards/{world.board.pk}/evaluate").status_code == 201
    for job in world.failed_jobs.values():
        assert _client(world.bob).post(f"/api/jobs/{job.pk}/resume").status_code == 200
    kinds = [kind for kind, _ in world.dispatched]
    assert kinds.count("run") == 2 and kinds.count("job") == 2 + len(JobKind.values)


def _socket_ok(w: World, ws_headers: Any) -> bool:
    headers = ws_headers(w.bob)

    async def scenario() -> dict[str, Any]:
        ws = Socket(application, f"/ws/conversations/{w.conversation.pk}/", headers)
        assert (await ws.connect())[0]
        reply = await ws.request(type="generate", content="hi", sampling=SAMPLING)
        await ws.close()
        return reply

    return run_async(scenario())["type"] == "runs"


def test_a_team_member_s_fork_stops_working_but_the_owner_s_recipe_keeps_working(world: World) -> None:
    """Only the one who lost access is refused: alice's own turns on her recipe still run."""
    _revoke(world, "removed from the team")
    recipe = world.fork.recipe.forked_from_version
    conversation = playground.create_conversation(world.alice, world.deployment, recipe_version=recipe)
    assert playground.start_turn(world.alice, conversation, "hi", sampling=playground.Sampling(**SAMPLING))


# --------------------------------------------------------------------------------------------
# Share links: the object's editors list and revoke every link to it; a creator who lost the
# object no longer shares it
# --------------------------------------------------------------------------------------------
@pytest.fixture
def team_board(alice: User, bob: User, team_t: Any, tiny_deployment: Any) -> Any:
    rows = library.create_dataset_rows(
        alice, "rows", "labelled", marker_rows(8), team=team_t, visibility="team"
    )
    return boards.create_board(
        alice, tiny_deployment, name="team board", dataset_id=rows.pk, team=team_t, visibility="team"
    )


def _share(user: User, board: Any) -> tuple[int, str]:
    body = _client(user).post(f"/api/boards/{board.pk}/share").json()
    return body["id"], body["token"]


def _opens(token: str) -> int:
    return Client().get(f"/api/shared/{token}").status_code


def test_a_board_s_owner_lists_and_revokes_the_links_its_editors_made(
    alice: User, bob: User, carol: User, team_board: Any
) -> None:
    link_id, token = _share(bob, team_board)
    listed = _client(alice).get("/api/share-links").json()
    assert [(item["id"], item["created_by"], item["kind"]) for item in listed] == [(link_id, "bob", "board")]
    assert _client(carol).get("/api/share-links").json() == []
    assert _client(carol).delete(f"/api/share-links/{link_id}").status_code == 404
    assert _opens(token) == 200
    assert _client(alice).delete(f"/api/share-links/{link_id}").status_code == 204
    assert _opens(token) == 404
    assert ShareLink.objects.get(pk=link_id).revoked_at is not None


@pytest.mark.parametrize("how", REVOCATIONS)
def test_a_link_stops_resolving_once_its_creator_can_no_longer_see_the_board(
    how: str, alice: User, bob: User, team_t: Any, team_board: Any
) -> None:
    bobs_id, bobs = _share(bob, team_board)
    _, alices = _share(alice, team_board)
    if how == "removed from the team":
        accounts.remove_member(alice, team_t, bob)
    else:
        library.set_visibility(alice, team_board, "private")
    assert _opens(bobs) == 404
    assert _opens(alices) == 200  # the owner still sees her board: her link still works
    # bob's link is still listed to alice, who can revoke it for good.
    assert bobs_id in [item["id"] for item in _client(alice).get("/api/share-links").json()]
    assert _client(alice).delete(f"/api/share-links/{bobs_id}").status_code == 204


# --------------------------------------------------------------------------------------------
# Completeness: a new way to start work fails here until it is covered above
# --------------------------------------------------------------------------------------------
WORK_RESPONSES = {"RunOut", "JobOut"}
STARTS_NO_WORK = {
    ("POST", "/api/runs/import"): "stores a finished run; replaying it is a replay",
    ("POST", "/api/jobs/{job_id}/cancel"): "stops a job",
    ("POST", "/v1/runs/<int:run_id>/adjust"): "controls a running run",
    ("POST", "/v1/runs/<int:run_id>/stop"): "controls a running run",
}
SOCKET_STARTS_WORK = {"generate": "socket generate", "replay": "socket replay"}
SOCKET_NO_WORK = {"adjust", "stop", "resume", "set_recipe", "status", "ping"}
# The only places that hand work to a worker, each behind the reference check.
DISPATCH_CALLS = {
    ("webapp/playground/services.py", "dispatch_on_commit", "dispatch_run"),
    ("webapp/jobs/services.py", "dispatch_on_commit", "dispatch_job"),
    # Re-queued by the reaper (a worker died): checked again when the next worker claims it.
    ("webapp/playground/dispatch.py", "requeue_expired_runs", "dispatch_run"),
    ("webapp/jobs/dispatch.py", "requeue_expired_jobs", "dispatch_job"),
    ("webapp/playground/dispatch.py", "dispatch_run", "execute_run_task"),
    ("webapp/jobs/dispatch.py", "dispatch_job", "execute_job_task"),
}
CLAIMS_CHECKED = {("webapp/playground/execution.py", "_generate"), ("webapp/jobs/runner.py", "execute_job")}


def _work_operations() -> set[tuple[str, str]]:
    out = set()
    for path, operations in api.get_openapi_schema()["paths"].items():
        for method, operation in operations.items():
            for code, response in operation.get("responses", {}).items():
                ref = (
                    response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref", "")
                )
                if (
                    method == "post"
                    and str(code).startswith("2")
                    and ref.rsplit("/", 1)[-1] in WORK_RESPONSES
                ):
                    out.add((method.upper(), path))
    return out


def test_every_entry_point_that_starts_work_is_covered() -> None:
    covered = {" ".join(name.split(" ")[:2]) for name in WEB}
    for method, path in _work_operations():
        assert f"{method} {path}" in covered or (method, path) in STARTS_NO_WORK, (
            f"{method} {path}: add it to WEB"
        )
    v1 = {("POST", f"/v1/{p.pattern!s}") for p in openai_api.urlpatterns if "models" not in str(p.pattern)}
    assert v1 - set(STARTS_NO_WORK) == {("POST", "/v1/chat/completions")}
    assert set(ConversationConsumer.HANDLERS) == set(SOCKET_STARTS_WORK) | SOCKET_NO_WORK
    assert set(SOCKET_STARTS_WORK.values()) <= set(WEB)
    for kind in JobKind.values:  # every kind is resumed and claimed through the check
        assert (
            f"POST /api/jobs/{{job_id}}/resume ({kind})" in WEB and f"worker: a queued {kind} job" in WORKER
        )


class _Calls(ast.NodeVisitor):
    """(enclosing function, callee name) of every call in a module (the innermost function)."""

    def __init__(self) -> None:
        self.stack: list[str] = ["<module>"]
        self.found: list[tuple[str, str]] = []

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.stack.append(node.name)
        self.generic_visit(node)
        self.stack.pop()

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_Call(self, node: ast.Call) -> None:
        callee = node.func
        if isinstance(callee, ast.Attribute) and callee.attr in ("apply_async", "delay", "s"):
            callee = callee.value  # execute_run_task.apply_async(...) calls the task
        name = callee.attr if isinstance(callee, ast.Attribute) else getattr(callee, "id", "")
        self.found.append((self.stack[-1], name))
        self.generic_visit(node)


def _calls(root: Path) -> set[tuple[str, str, str]]:
    """(file, enclosing function, callee name) for every call in ``root``'s Python files."""
    out = set()
    for path in sorted(root.rglob("*.py")):
        visitor = _Calls()
        visitor.visit(ast.parse(path.read_text()))
        out.update((str(path.relative_to(root.parent)), fn, name) for fn, name in visitor.found)
    return out


def test_work_reaches_a_worker_only_through_the_checked_dispatch_path() -> None:
    calls = _calls(Path(__file__).resolve().parents[2] / "webapp")
    watched = {"dispatch_run", "dispatch_job", "execute_run_task", "execute_job_task"}
    assert {call for call in calls if call[2] in watched} == DISPATCH_CALLS
    checked = {(file, function) for file, function, name in calls if name == "check_references"}
    assert (
        CLAIMS_CHECKED
        | {
            ("webapp/playground/services.py", "dispatch_on_commit"),
            ("webapp/jobs/services.py", "dispatch_on_commit"),
        }
        <= checked
    )
