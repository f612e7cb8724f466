"""Schemathesis against the app's own OpenAPI schema, in process (WSGI), authenticated as alice
with a Bearer token, against seeded objects: no 5xx, every response matches the schema, and at
least 80% of the operations reach a 2xx. Examples are capped (and derandomized) for CI."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.integration.test_api_permissions import (
    FILES,
    ROWS,
    STEER,
    _deployment,
    _format,
    _seed,
    _seed_conversation,
)
from webapp.accounts import services
from webapp.accounts.models import Membership, Role, Team, User
from webapp.jobs import services as jobs
from webapp.jobs.batch import summary
from webapp.jobs.models import Job, JobBatch
from webapp.library.models import ModelDeployment

MAX_EXAMPLES = 10
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _keep_the_test_connection() -> Any:
    """The WSGI handler closes the database connection after each request; the test's transaction
    lives on it, so (like Django's test client) keep it open while the fuzzer runs."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def test_fuzz_the_api(alice: User, bob: User, team_t: Team, make_user: Any, settings: Any) -> None:
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "localhost"]
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", get_wsgi_application())
    dave = make_user("dave")
    Membership.objects.create(team=team_t, user=dave, role=Role.VIEWER)
    _, raw = services.create_api_token(alice, name="fuzz")
    settings.STEERLAB_MAX_ACTIVE_JOBS = 1000  # jobs started here never run (no worker): no quota
    target, _ = services.create_api_token(alice, name="target")  # DELETE /api/tokens/{token_id}
    invitation, _ = services.invite_to_team(alice, team_t)  # DELETE .../invitations/{invitation_id}
    seeded = _seed(alice, team_t, _deployment())
    ids = {
        **seeded["public"],
        **_seed_conversation(alice),
        "team_id": team_t.pk,
        "user_id": dave.pk,
        "token_id": target.pk,
        "invitation_id": invitation.pk,
    }
    headers = {"Authorization": f"Bearer {raw}"}
    statuses: dict[str, set[int]] = defaultdict(set)
    # Deletions last, so that they do not spoil the other operations' seeded targets.
    operations = sorted(
        (result.ok() for result in schema.get_all_operations()), key=lambda op: op.method.upper() == "DELETE"
    )

    def run(operation: Any, case: Any) -> None:
        if case.path_parameters:
            case.path_parameters = {key: ids.get(key, value) for key, value in case.path_parameters.items()}
        response = case.call(headers=headers)
        statuses[operation.label].add(response.status_code)
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])

    def fuzzer(operation: Any) -> Any:
        @given(case=operation.as_strategy())
        @hypothesis_settings(
            max_examples=MAX_EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: Any) -> None:
            run(operation, case)

        return fuzz

    deletions = [op for op in operations if op.method.upper() == "DELETE"]
    for operation in operations:
        if operation not in deletions:
            fuzzer(operation)()

    # Valid requests that random data cannot be expected to find.
    by_label = {operation.label: operation for operation in operations}
    explicit: dict[str, dict[str, Any]] = {
        "POST /api/recipes": {
            "body": {"deployment": "tiny", "name": "r", "spec": _format(STEER, {"ref": ids["ref"]})},
            "media_type": "application/json",
        },
        "POST /api/conversations": {
            "body": {"deployment": "tiny", "recipe_id": ids["recipe_id"], "title": "fuzz"},
            "media_type": "application/json",
        },
        "POST /api/recipes/{recipe_id}/versions": {
            "body": {"spec": _format(STEER, {"ref": ids["ref"]})},
            "media_type": "application/json",
            "path_parameters": {"recipe_id": ids["recipe_id"]},
        },
    }
    json_bodies: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
        "POST /api/datasets/rows": ({"name": "typed", "kind": "labelled", "rows": ROWS}, {}),
        "PUT /api/datasets/{dataset_id}/rows": ({"rows": ROWS}, {"dataset_id": ids["dataset_id"]}),
        "POST /api/jobs/build-vector": (
            {"deployment": "tiny", "dataset_id": ids["pairs_id"], "name": "v", "layers": [1]},
            {},
        ),
        "POST /api/jobs/train-probe": (
            {"deployment": "tiny", "dataset_id": ids["dataset_id"], "name": "p", "layer": 1},
            {},
        ),
        "POST /api/jobs/batch-run": (
            {
                "deployment": "tiny",
                "dataset_id": ids["dataset_id"],
                "name": "b",
                "recipe_id": ids["recipe_id"],
                "max_new_tokens": 4,
                "temperature": 0.0,
                "seed": 1,
                "overrides": [{"index": 0, "scale": 0.5}],
            },
            {},
        ),
        "POST /api/jobs/sweep": (
            {
                "deployment": "tiny",
                "vector_id": int(ids["ref"].removeprefix("vec_")),
                "name": "s",
                "layers": [1],
                "scales": [0.0, 1.0],
                "prompts": ["hi"],
                "probe_ids": [ids["probe_id"]],
            },
            {},
        ),
        "POST /api/boards": (
            {
                "deployment": "tiny",
                "name": "b",
                "dataset_id": ids["dataset_id"],
                "probe_ids": [ids["probe_id"]],
            },
            {},
        ),
        "POST /api/boards/{board_id}/probes": (
            {"probe_ids": [ids["other_probe_id"]]},
            {"board_id": ids["board_id"]},
        ),
    }
    # The seeded failed job: resumed (queued again, no worker here), then cancelled.
    for label in ("POST /api/jobs/{job_id}/resume", "POST /api/jobs/{job_id}/cancel"):
        explicit[label] = {"path_parameters": {"job_id": ids["job_id"]}}
    # A finished batch run's downloads.
    done = _finished_batch_run(alice, ids["dataset_id"])
    for label in ("GET /api/jobs/{job_id}/results.jsonl", "GET /api/jobs/{job_id}/results.parquet"):
        explicit[label] = {"path_parameters": {"job_id": done}}
    for label, (body, path) in json_bodies.items():
        explicit[label] = {"body": body, "media_type": "application/json", "path_parameters": path}
    for what, fields in (
        ("vector", {"deployment": "tiny", "name": "up"}),
        ("probe", {"deployment": "tiny", "name": "up", "layer": 1}),
        ("dataset", {"name": "up"}),
    ):
        filename, make = FILES[what]
        explicit[f"POST /api/{what}s"] = {
            "body": {**fields, "file": (filename, make())},
            "media_type": "multipart/form-data",
        }
    for label, kwargs in explicit.items():
        run(by_label[label], by_label[label].Case(**kwargs))
    for operation in deletions:
        fuzzer(operation)()

    reached = sorted(label for label, codes in statuses.items() if any(200 <= c < 300 for c in codes))
    assert len(statuses) == len(operations)
    missed = {label: sorted(codes) for label, codes in statuses.items() if label not in reached}
    assert len(reached) >= 0.8 * len(operations), missed


def _finished_batch_run(user: User, dataset_id: int) -> int:
    """A batch run of ``dataset_id`` marked done, with one stored batch of results (no engine here)."""
    job = jobs.batch_run(
        user,
        ModelDeployment.objects.get(name="tiny"),
        dataset_id=dataset_id,
        name="done",
        seed=1,
        reads=False,
    )
    results = [
        {
            "index": i,
            "prompt": row["text"],
            "label": row["label"],
            "prompt_tokens": 3,
            "seed": 1 + i,
            "tokens": [5, 6],
            "text": "ok",
            "finish_reason": "length",
            "logprobs": [-1.0, -2.0],
            "reads": None,
        }
        for i, row in enumerate(ROWS)
    ]
    engines = [{"engine": "hf", "version": "test"}]
    blob = json.dumps({"engine": engines[0], "results": results}).encode()
    JobBatch.objects.create(job=job, index=0, attempt=1, data=blob)
    Job.objects.filter(pk=job.pk).update(status="done", result=summary(results, engines))
    return job.pk
