"""Batch runs: a recipe applied to every prompt of a labelled dataset as one job — its inputs
checked, each prompt's result equal to the chat turn with the same message, recipe and seed, the
JSON Lines and Parquet downloads with one result per prompt, and resumption (after a failure in
process, and after a real Celery worker is killed with SIGKILL)."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from channels.layers import InMemoryChannelLayer
from django.core.exceptions import ValidationError
from django.test import AsyncClient, Client
from support.handover import assert_resumed, hand_over
from support.stops import stop_in

from webapp.jobs import services as jobs
from webapp.jobs.batch import BatchRun, prompt_seed
from webapp.jobs.models import Job, JobBatch, JobStatus
from webapp.jobs.runner import execute_job
from webapp.library import services as library
from webapp.library.models import Dataset
from webapp.playground import services as playground
from webapp.playground.examples import marker_pairs, marker_rows
from webapp.playground.execution import execute_run
from webapp.playground.models import Run, RunEvent
from workers.engines.loading import HostedModel
from workers.host import EngineHost

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(600)]

_MODELS: dict[str, HostedModel] = {}  # the tiny engine, loaded once for the module
OVERRIDES = [{"index": 0, "scale": 3.0}]


@pytest.fixture
def host() -> Iterator[EngineHost]:
    host = EngineHost(InMemoryChannelLayer(), models=_MODELS)
    yield host
    host.loop.call_soon_threadsafe(host.loop.stop)


def _dataset(user: Any, rows: list[dict[str, str]], name: str = "prompts", **kw: Any) -> Dataset:
    return library.create_dataset_rows(user, name, "labelled", rows, **kw)


def _run(job: Job, host: EngineHost) -> Job:
    outcome = execute_job(job.pk, host)
    job.refresh_from_db()
    assert job.status == JobStatus.DONE, (outcome, job.error)
    return job


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _jsonl(client: Client, job: Job) -> list[dict[str, Any]]:
    response = client.get(f"/api/jobs/{job.pk}/results.jsonl")
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/x-ndjson"
    body = b"".join(response.streaming_content).decode()
    assert body.endswith("\n")
    return [json.loads(line) for line in body.splitlines()]


def _parquet(client: Client, job: Job) -> Any:
    response = client.get(f"/api/jobs/{job.pk}/results.parquet")
    assert response.status_code == 200, response.content
    return pq.read_table(io.BytesIO(response.content))


# --------------------------------------------------------------------------------------------
# Starting one: every input checked, nothing written when one is refused
# --------------------------------------------------------------------------------------------
def test_batch_run_inputs_are_checked(
    alice: Any, carol: Any, tiny_deployment: Any, example_version: Any, settings: Any
) -> None:
    from interventions.tiny import build_tiny

    data = _dataset(alice, marker_rows(6, seed=1))
    pairs = library.create_dataset_rows(alice, "pairs", "contrastive", marker_pairs(4, seed=2))
    other = library.register_deployment("tiny-other", str(build_tiny()))
    other_recipe, _ = library.create_recipe(
        alice, other, "lens", {"interventions": [{"op": "logit_lens", "layer": 1, "k": 3}]}
    )
    recipe_id = example_version.recipe_id
    good: dict[str, Any] = {
        "dataset_id": data.pk,
        "name": "b",
        "recipe_id": recipe_id,
        "overrides": OVERRIDES,
    }
    bad = [
        ({"dataset_id": pairs.pk}, "dataset_id"),  # contrastive pairs are not prompts
        ({"dataset_id": 10**9}, "dataset_id"),
        ({"recipe_id": other_recipe.pk}, "recipe_id"),  # a recipe for another model
        ({"recipe_id": 10**9}, "recipe_id"),
        ({"version": 2}, "version"),
        ({"recipe_id": None, "version": 1, "overrides": []}, "version"),
        ({"overrides": [{"index": 3, "scale": 1.0}]}, "overrides"),  # the recipe has 3 interventions
        ({"overrides": [{"index": 0, "scale": float("nan")}]}, "overrides"),
        ({"overrides": [{"index": 0}]}, "overrides"),
        ({"recipe_id": None}, "overrides"),  # no recipe: nothing to override
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": float("inf")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": float("nan")}, "top_p"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": settings.STEERLAB_MAX_NEW_TOKENS + 1}, "max_new_tokens"),
        ({"seed": -1}, "seed"),
        ({"seed": 1 << 31}, "seed"),
        ({"reads": "yes"}, "reads"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": [""]}, "stop"),
        ({"stop": 5}, "stop"),
    ]
    for change, field in bad:
        with pytest.raises(ValidationError) as info:
            jobs.batch_run(alice, tiny_deployment, **{**good, **change})
        assert list(info.value.message_dict) == [field], change

    # Someone else's private dataset or recipe reads as unknown.
    carols = _dataset(carol, marker_rows(4, seed=3), name="carol's")
    with pytest.raises(ValidationError) as info:
        jobs.batch_run(carol, tiny_deployment, **{**good, "dataset_id": carols.pk})
    assert info.value.message_dict == {"recipe_id": [f"no recipe {recipe_id} that you can see"]}
    with pytest.raises(ValidationError) as info:
        jobs.batch_run(carol, tiny_deployment, **{**good, "recipe_id": None, "overrides": []})
    assert info.value.message_dict == {"dataset_id": [f"no dataset {data.pk} that you can see"]}

    # An oversized dataset is refused with the limit in the message.
    settings.STEERLAB_BATCH_MAX_PROMPTS = 5
    with pytest.raises(ValidationError) as info:
        jobs.batch_run(alice, tiny_deployment, **good)
    assert info.value.message_dict == {
        "dataset_id": ["dataset 'prompts' has 6 prompts; a batch run takes at most 5"]
    }
    settings.STEERLAB_BATCH_MAX_PROMPTS = 6

    # Its tokens (prompts x max_new_tokens) count against the daily budget, with the person's runs.
    settings.STEERLAB_DAILY_TOKEN_BUDGET = 6 * 10 + 5
    with pytest.raises(playground.PlaygroundError) as quota:
        jobs.batch_run(alice, tiny_deployment, **good, max_new_tokens=11)
    assert quota.value.code == "quota" and "may generate 66 tokens" in quota.value.message
    assert not Job.objects.exists()
    first = jobs.batch_run(alice, tiny_deployment, **good, max_new_tokens=10, seed=7)
    response = _client(alice).post(
        "/api/jobs/batch-run",
        {"deployment": "tiny", "dataset_id": data.pk, "name": "again", "max_new_tokens": 1},
        content_type="application/json",
    )
    assert response.status_code == 429 and "(60 used)" in response.json()["detail"]
    assert list(Job.objects.values_list("pk", flat=True)) == [first.pk]

    # What is pinned: everything a reproducible export needs.
    params = first.params
    assert params["recipe"] == {
        "id": recipe_id,
        "name": example_version.recipe.name,
        "version": 1,
        "version_id": example_version.pk,
    }
    assert params["spec"] == example_version.spec
    assert params["content_hashes"] == example_version.content_hashes and len(params["content_hashes"]) == 2
    assert params["sampling"] == {"max_new_tokens": 10, "temperature": 0.7, "top_p": 0.95, "seed": 7}
    assert params["overrides"] == OVERRIDES and params["reads"] is True
    assert params["dataset_hash"] == data.content_hash and params["prompts"] == 6
    assert params["model"]["name"] == "tiny" and params["model"]["revision"] == tiny_deployment.revision
    assert params["model"]["source"] == tiny_deployment.hf_id_or_path
    assert (first.kind, first.dataset_id, params["token_budget"]) == ("batch_run", data.pk, 60)


def test_the_api_starts_a_batch_run_and_refuses_hidden_inputs(
    alice: Any, carol: Any, tiny_deployment: Any, example_version: Any
) -> None:
    data = _dataset(alice, marker_rows(4, seed=4))
    body = {
        "deployment": "tiny",
        "dataset_id": data.pk,
        "name": "api",
        "recipe_id": example_version.recipe_id,
        "max_new_tokens": 4,
        "temperature": 0.0,
        "seed": 3,
        "overrides": [{"index": 0, "enabled": False}],
        "reads": False,
    }
    response = _client(alice).post("/api/jobs/batch-run", body, content_type="application/json")
    assert response.status_code == 201, response.content
    out = response.json()
    assert (out["kind"], out["status"], out["dataset_id"]) == ("batch_run", "queued", data.pk)
    assert out["params"]["overrides"] == [{"index": 0, "enabled": False}]
    assert out["params"]["reads"] is False and out["params"]["sampling"]["seed"] == 3

    response = _client(alice).post(
        "/api/jobs/batch-run", {**body, "deployment": "ti\x00ny"}, content_type="application/json"
    )
    assert response.status_code == 400 and response.json()["detail"] == "Unknown deployment 'ti\\x00ny'."
    carol_body = {**body, "dataset_id": _dataset(carol, marker_rows(4, seed=5)).pk}
    response = _client(carol).post("/api/jobs/batch-run", carol_body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "recipe_id": [f"no recipe {example_version.recipe_id} that you can see"]
    }
    assert Job.objects.count() == 1


# --------------------------------------------------------------------------------------------
# Running one: each prompt's result is its chat turn's, the downloads hold one result per prompt
# --------------------------------------------------------------------------------------------
def _chat_run(host: EngineHost, user: Any, version: Any, text: str, sampling: dict[str, Any]) -> Run:
    """The chat turn of ``text`` with ``version`` and ``OVERRIDES``, run on ``host`` to its end."""
    conversation = playground.create_conversation(user, version.recipe.deployment, recipe_version=version)
    (run,) = playground.start_turn(
        user, conversation, text, sampling=playground.Sampling(**sampling), overrides=OVERRIDES
    )
    assert execute_run(run.pk, host).status == "done"
    run.refresh_from_db()
    return run


def test_each_prompt_of_a_batch_run_gives_what_a_chat_turn_gives(
    alice: Any,
    bob: Any,
    carol: Any,
    team_t: Any,
    tiny_deployment: Any,
    example_version: Any,
    host: EngineHost,
) -> None:
    rows = marker_rows(20, seed=6)  # two stored batches: 16 prompts, then 4
    data = _dataset(alice, rows)
    sampling = {"max_new_tokens": 6, "temperature": 0.9, "top_p": 0.95, "seed": 1234}
    job = jobs.batch_run(
        alice,
        tiny_deployment,
        dataset_id=data.pk,
        name="batch",
        recipe_id=example_version.recipe_id,
        overrides=OVERRIDES,
        team=team_t,
        visibility="team",
        **sampling,
    )
    job = _run(job, host)
    assert (job.done_batches, job.total_batches) == (2, 2)
    assert list(job.batches.values_list("index", "attempt")) == [(0, 1), (1, 1)]

    lines = _jsonl(_client(bob), job)  # a member of the job's team may download it
    assert [line["index"] for line in lines] == list(range(20))
    assert [(line["prompt"], line["label"]) for line in lines] == [(r["text"], r["label"]) for r in rows]
    assert [line["seed"] for line in lines] == [(1234 + i) % (1 << 31) for i in range(20)]
    assert set(lines[0]) == {
        "index", "prompt", "label", "prompt_tokens", "seed", "tokens", "text", "finish_reason", "logprobs", "reads"
    }  # fmt: skip
    for line in lines:
        n = len(line["tokens"])
        assert 1 <= n <= 6 and line["finish_reason"] == ("stop" if n < 6 else line["finish_reason"])
        assert line["finish_reason"] in ("length", "stop")
        assert len(line["logprobs"]) == n and all(lp <= 0 for lp in line["logprobs"])
        assert list(line["reads"]["probes"]) == ["1"] and list(line["reads"]["lens"]) == ["2"]
        assert len(line["reads"]["probes"]["1"]) == n and None not in line["reads"]["probes"]["1"]
        lens = line["reads"]["lens"]["2"]
        assert len(lens) == n and all(len(step["ids"]) == len(step["probs"]) == 5 for step in lens)
    reasons = {
        reason: sum(line["finish_reason"] == reason for line in lines) for reason in ("length", "stop")
    }
    total = sum(len(line["tokens"]) for line in lines)
    assert job.result == {
        "prompts": 20,
        "finish_reasons": {k: v for k, v in sorted(reasons.items()) if v},
        "tokens": total,
        "mean_tokens": round(total / 20, 4),
        "engines": [{"engine": "hf", "version": job.result["engines"][0]["version"]}],
    }
    assert job.result["engines"][0]["version"]

    table = _parquet(_client(alice), job)
    assert table.num_rows == 20 and table.column_names == [
        "index", "prompt", "label", "prompt_tokens", "seed", "tokens", "text", "finish_reason", "logprobs",
        "error", "probe_1", "lens_2_ids", "lens_2_probs",
    ]  # fmt: skip
    columns = table.to_pydict()
    assert columns["index"] == list(range(20)) and columns["label"] == [r["label"] for r in rows]
    assert columns["tokens"] == [line["tokens"] for line in lines]
    assert columns["text"] == [line["text"] for line in lines]
    assert columns["lens_2_ids"] == [[s["ids"] for s in line["reads"]["lens"]["2"]] for line in lines]
    for got, line in zip(columns["probe_1"], lines, strict=True):
        assert np.allclose(got, line["reads"]["probes"]["1"], rtol=1e-6, atol=1e-6)
    metadata = json.loads(table.schema.metadata[b"steerlab"])
    assert metadata["job"] == job.pk and metadata["recipe"]["version_id"] == example_version.pk
    assert metadata["sampling"] == sampling and metadata["read_columns"]["probe_1"]["probe"].startswith(
        "prb_"
    )

    # Others learn nothing of a job they cannot see.
    for suffix in ("jsonl", "parquet"):
        assert _client(carol).get(f"/api/jobs/{job.pk}/results.{suffix}").status_code == 404

    # A prompt of the batch is the chat turn with the same message, recipe, overrides and seed
    # (one from each stored batch).
    for index in (3, 17):
        run = _chat_run(
            host, alice, example_version, rows[index]["text"], {**sampling, "seed": prompt_seed(1234, index)}
        )
        line = lines[index]
        assert line["tokens"] == run.tokens and line["text"] == run.text
        assert line["prompt_tokens"] == len(run.prompt_tokens)
        frames = RunEvent.objects.filter(run=run, payload__type="token").order_by("seq")
        assert np.allclose([f.payload["logprob"] for f in frames], line["logprobs"], atol=1e-4)
        # The run keeps its probe scores as float16 per position: the generated tokens' rows.
        assert run.read_columns == [1]
        table16 = np.frombuffer(bytes(run.reads), dtype="<f2").reshape(-1, 1)
        generated = table16[len(run.prompt_tokens) :, 0].astype(np.float32)
        assert np.allclose(generated, line["reads"]["probes"]["1"], rtol=2e-3, atol=2e-3)


def test_a_plain_batch_run_without_reads_and_downloads_of_other_jobs(
    alice: Any, tiny_deployment: Any, host: EngineHost
) -> None:
    rows = marker_rows(3, seed=7)
    data = _dataset(alice, rows)
    job = jobs.batch_run(
        alice,
        tiny_deployment,
        dataset_id=data.pk,
        name="plain",
        max_new_tokens=3,
        temperature=0.0,
        reads=False,
    )
    client = _client(alice)
    for suffix in ("jsonl", "parquet"):  # not finished yet
        response = client.get(f"/api/jobs/{job.pk}/results.{suffix}")
        assert response.status_code == 400
        assert response.json()["detail"] == (
            f"Results are downloaded from a finished batch run; job {job.pk} is a batch_run job (queued)."
        )
    job = _run(job, host)
    lines = _jsonl(client, job)
    assert [line["index"] for line in lines] == [0, 1, 2] and all(line["reads"] is None for line in lines)
    table = _parquet(client, job)
    assert "probe_1" not in table.column_names and table.column("tokens").to_pylist() == [
        line["tokens"] for line in lines
    ]
    assert json.loads(table.schema.metadata[b"steerlab"])["recipe"] is None
    # Greedy and without a recipe: the unsteered model's answer to the chat turn.
    conversation = playground.create_conversation(alice, tiny_deployment)
    (run,) = playground.start_turn(
        alice,
        conversation,
        rows[2]["text"],
        sampling=playground.Sampling(max_new_tokens=3, temperature=0.0, seed=0),
    )
    assert execute_run(run.pk, host).status == "done"
    assert Run.objects.get(pk=run.pk).tokens == lines[2]["tokens"]

    # The export: what redoes the batch (its pinned params, seed rule, prompts) and what it gave.
    exported = client.get(f"/api/jobs/{job.pk}/export")
    assert exported.status_code == 200, exported.content
    archive = zipfile.ZipFile(io.BytesIO(exported.content))
    assert sorted(archive.namelist()) == ["dataset.jsonl", "manifest.json", "results.jsonl"]  # no tensors
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["format"] == "steerlab.batch_run" and manifest["site_job"] == job.pk
    assert manifest["params"]["sampling"] == job.params["sampling"]
    assert manifest["params"]["model"]["name"] == "tiny"
    assert manifest["engines"] and manifest["engines"][0]["engine"] == "hf"
    assert [json.loads(x) for x in archive.read("dataset.jsonl").splitlines()] == rows
    assert [json.loads(x) for x in archive.read("results.jsonl").splitlines()] == lines

    train = _dataset(alice, marker_rows(8, seed=10), name="train")
    probe_job = jobs.train_probe(alice, tiny_deployment, dataset_id=train.pk, name="p", layer=1)
    for path in ("results.jsonl", "export"):
        response = client.get(f"/api/jobs/{probe_job.pk}/{path}")
        assert response.status_code == 400 and "is a train_probe job" in response.json()["detail"]


def test_a_batch_run_with_stop_sequences_ends_each_answer_as_its_chat_turn_does(
    alice: Any, tiny_deployment: Any, example_version: Any, host: EngineHost
) -> None:
    rows = marker_rows(8, seed=11)
    data = _dataset(alice, rows)
    sampling = {"max_new_tokens": 16, "temperature": 0.9, "top_p": 1.0, "seed": 77}
    recipe = {"recipe_id": example_version.recipe_id, "overrides": OVERRIDES}

    def batch(name: str, **more: Any) -> Job:
        started = jobs.batch_run(
            alice, tiny_deployment, dataset_id=data.pk, name=name, **recipe, **sampling, **more
        )
        return _run(started, host)

    plain = _jsonl(_client(alice), batch("plain"))
    # Two stop strings from the middle of two answers (each answer's text is random).
    stop = [stop_in(plain[0]["text"]), stop_in(plain[1]["text"])]
    job = batch("stopped", stop=stop)
    assert job.params["sampling"] == {**sampling, "stop": stop}
    lines = _jsonl(_client(alice), job)
    for line, whole in zip(lines, plain, strict=True):
        # The same tokens up to the stop string's first occurrence, the text before it. (Scores
        # agree within float error: the batches' other rows, so the steps' shapes, differ.)
        first = min((i for s in stop if (i := whole["text"].find(s)) >= 0), default=None)
        if first is None:
            assert (line["tokens"], line["text"]) == (whole["tokens"], whole["text"])
            assert line["finish_reason"] == whole["finish_reason"]
        else:
            assert line["finish_reason"] == "stop" and line["text"] == whole["text"][:first]
        n = len(line["tokens"])
        assert line["tokens"] == whole["tokens"][:n]
        assert np.allclose(line["logprobs"], whole["logprobs"][:n], atol=1e-4)
        # Every kept token was read, the one that completed the stop string included.
        assert np.allclose(line["reads"]["probes"]["1"], whole["reads"]["probes"]["1"][:n], atol=1e-3)
    assert len(lines[0]["tokens"]) < 16 and len(lines[1]["tokens"]) < 16
    assert job.result["finish_reasons"].get("stop", 0) >= 2

    # Each answer is the chat turn with the same message, recipe, seed and stop sequences.
    for index in (0, 1):
        seeded = {**sampling, "seed": prompt_seed(77, index), "stop": tuple(stop)}
        run = _chat_run(host, alice, example_version, rows[index]["text"], seeded)
        assert (run.tokens, run.text, run.finish_reason) == (
            lines[index]["tokens"],
            lines[index]["text"],
            "stop",
        )


def test_an_overlong_prompt_gets_an_error_result_and_the_others_run(
    alice: Any, tiny_deployment: Any, host: EngineHost, settings: Any
) -> None:
    rows = [{"text": "short one", "label": "a"}, {"text": " ".join(["word"] * 40), "label": "b"}]
    data = _dataset(alice, rows)
    settings.STEERLAB_MAX_PROMPT_TOKENS = 20
    job = _run(
        jobs.batch_run(alice, tiny_deployment, dataset_id=data.pk, name="long", max_new_tokens=2, seed=1),
        host,
    )
    lines = _jsonl(_client(alice), job)
    assert [line["index"] for line in lines] == [0, 1]
    assert len(lines[0]["tokens"]) >= 1 and "error" not in lines[0]
    assert lines[1]["tokens"] == [] and lines[1]["finish_reason"] == "error"
    assert lines[1]["error"] == f"the prompt is {lines[1]['prompt_tokens']} tokens long; the limit is 20"
    assert job.result["finish_reasons"]["error"] == 1 and job.result["prompts"] == 2


# --------------------------------------------------------------------------------------------
# Resuming
# --------------------------------------------------------------------------------------------
def test_a_failed_batch_run_resumes_from_its_stored_batches_to_the_same_results(
    alice: Any, tiny_deployment: Any, example_version: Any, host: EngineHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _dataset(alice, marker_rows(40, seed=8))  # 3 batches: 16, 16, 8
    start = {
        "dataset_id": data.pk,
        "recipe_id": example_version.recipe_id,
        "max_new_tokens": 5,
        "temperature": 1.0,
        "seed": 99,
        "overrides": OVERRIDES,
    }
    whole = _run(jobs.batch_run(alice, tiny_deployment, name="whole", **start), host)
    job = jobs.batch_run(alice, tiny_deployment, name="resumed", **start)

    computed: list[int] = []
    failed: list[bool] = []
    original = BatchRun.run_batch

    def flaky(self: BatchRun, ctx: Any, items: list[Any]) -> bytes:
        if len(computed) == 1 and not failed:
            failed.append(True)
            raise RuntimeError("the GPU fell off the bus")
        computed.append(items[0][0])
        return original(self, ctx, items)

    monkeypatch.setattr(BatchRun, "run_batch", flaky)
    assert execute_job(job.pk, host).status == "failed"
    job.refresh_from_db()
    assert (job.status, job.done_batches, job.total_batches) == (JobStatus.FAILED, 1, 3)
    kept = list(JobBatch.objects.filter(job=job).values_list("index", "attempt", "created_at"))
    jobs.resume_job(alice, job)
    job = _run(job, host)
    assert computed == [0, 16, 32]  # the first batch's rows once, then only the two missing batches
    rows = list(JobBatch.objects.filter(job=job).values_list("index", "attempt", "created_at"))
    assert rows[:1] == kept and [i for i, _, _ in rows] == [0, 1, 2]
    client = _client(alice)
    resumed, uninterrupted = _jsonl(client, job), _jsonl(client, whole)
    assert [line["index"] for line in resumed] == list(range(40))
    # Per-prompt seeds come from the row index: the resumed job generated the same tokens.
    assert [line["tokens"] for line in resumed] == [line["tokens"] for line in uninterrupted]
    assert job.result == whole.result


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(300)
def test_a_batch_run_over_100_prompts_resumes_after_its_worker_is_killed(
    own_worker_stack: Any, alice: Any, tmp_path: Path
) -> None:
    from interventions.tiny import build_tiny
    from webapp.playground.examples import create_example_recipe

    stack = own_worker_stack
    deployment = library.register_deployment("tiny", str(build_tiny()), queue_name=stack.queue)
    version = create_example_recipe(alice, deployment)
    data = _dataset(alice, marker_rows(100, seed=9))  # 7 batches: 6 of 16, then 4
    env = {
        **stack.worker_env,
        "STEERLAB_RUN_LEASE_SECONDS": "3",
        # Every engine step lasts at least this long: the job takes seconds, so it can be killed
        # in the middle.
        "STEERLAB_ENGINE_MIN_STEP_MS": "150",
    }
    handover = hand_over(
        stack,
        env,
        tmp_path,
        lambda: jobs.batch_run(
            alice,
            deployment,
            dataset_id=data.pk,
            name="hundred",
            recipe_id=version.recipe_id,
            max_new_tokens=4,
            temperature=0.8,
            seed=5,
        ),
        after_batches=2,
        sig=signal.SIGKILL,
    )
    # The second worker's reaper finds the expired lease, re-queues the job and runs it.
    kept, job = handover.kept, handover.job
    assert 2 <= len(kept) < 7 and all(attempt == 1 for _, attempt, _ in kept)
    assert job.status == JobStatus.DONE, job.error
    assert job.attempt == 2 and (job.done_batches, job.total_batches) == (7, 7)
    assert_resumed(handover, total=7, attempt=2)
    assert job.result["prompts"] == 100

    client = _client(alice)
    lines = _jsonl(client, job)
    assert len(lines) == 100 and [line["index"] for line in lines] == list(range(100))
    # An ASGI server (uvicorn) streams the same lines from an asynchronous iterator.
    streamed = asyncio.run(_asgi_jsonl(alice, job))
    assert [json.loads(line) for line in streamed.decode().splitlines()] == lines
    assert all(1 <= len(line["tokens"]) <= 4 for line in lines)
    assert [line["seed"] for line in lines] == [5 + i for i in range(100)]
    table = _parquet(client, job)
    assert table.num_rows == 100 and table.column("index").to_pylist() == list(range(100))
    assert table.column("tokens").to_pylist() == [line["tokens"] for line in lines]


async def _asgi_jsonl(user: Any, job: Job) -> bytes:
    client = AsyncClient()
    await client.aforce_login(user)
    response = await client.get(f"/api/jobs/{job.pk}/results.jsonl")
    assert response.status_code == 200 and response.is_async
    return b"".join([chunk async for chunk in response.streaming_content])


def test_chat_turns_count_batch_runs_against_the_daily_budget(
    alice: Any, tiny_deployment: Any, settings: Any
) -> None:
    rows = [{"text": f"prompt {i}", "label": "x"} for i in range(5)]
    data = library.create_dataset_rows(alice, "prompts", "labelled", rows)
    settings.STEERLAB_DAILY_TOKEN_BUDGET = 5 * 10 + 8
    jobs.batch_run(alice, tiny_deployment, name="b", dataset_id=data.pk, max_new_tokens=10)
    conversation = playground.create_conversation(alice, tiny_deployment)
    with pytest.raises(playground.PlaygroundError) as refused:
        playground.start_turn(alice, conversation, "hello", sampling=playground.Sampling(max_new_tokens=9))
    assert refused.value.code == "quota" and "(50 used)" in refused.value.message
    assert not Run.objects.exists()
    (run,) = playground.start_turn(
        alice, conversation, "hello", sampling=playground.Sampling(max_new_tokens=8)
    )
    assert run.max_new_tokens == 8
