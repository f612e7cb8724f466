"""Jobs on the shared engine: building vectors and training probes from examples, comparison
boards and steering sweeps, resumed after failures — on the tiny model, with data whose answer is
known: half the prompts end with a marker word (``webapp.playground.examples.marker_rows``, the
demo's datasets too), so the label is planted in the last token's activations (a random-weight
model carries a marker from the middle of a prompt only weakly)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from channels.layers import InMemoryChannelLayer
from django.core.exceptions import ValidationError
from django.test import Client

from interventions.probes import LinearProbe
from interventions.probes import to_safetensors_bytes as probe_bytes
from webapp.compare import services as boards
from webapp.jobs import services as jobs
from webapp.jobs.kinds import TrainProbe
from webapp.jobs.models import Job, JobBatch, JobStatus
from webapp.jobs.runner import execute_job
from webapp.library import services as library
from webapp.library.models import Dataset, Probe, SteeringVector
from webapp.playground import services as playground
from webapp.playground.examples import marker_pairs, marker_rows
from webapp.playground.execution import execute_run, load_deployment
from workers.engines.loading import HostedModel
from workers.host import EngineHost

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(600)]

_MODELS: dict[str, HostedModel] = {}  # the tiny engine, loaded once for the module


@pytest.fixture
def host() -> Iterator[EngineHost]:
    host = EngineHost(InMemoryChannelLayer(), models=_MODELS)
    yield host
    host.loop.call_soon_threadsafe(host.loop.stop)


def _dataset(user: Any, name: str, kind: str, rows: list[dict[str, str]], **kw: Any) -> Dataset:
    return library.create_dataset_rows(user, name, kind, rows, **kw)


def _run(job: Job, host: EngineHost) -> Job:
    outcome = execute_job(job.pk, host)
    job.refresh_from_db()
    assert job.status == JobStatus.DONE, (outcome, job.error)
    return job


def _random_probe(user: Any, deployment: Any, layer: int, seed: int = 5, **kw: Any) -> Probe:
    weight = torch.randn(deployment.hidden_size, generator=torch.Generator().manual_seed(seed))
    return library.upload_probe(
        user,
        deployment,
        f"random {seed}",
        "r.safetensors",
        probe_bytes(LinearProbe(weight, 0.0)),
        layer=layer,
        **kw,
    )


@pytest.fixture
def marker_probe(alice: Any, tiny_deployment: Any, host: EngineHost) -> Probe:
    train = _dataset(alice, "marker train", "labelled", marker_rows(160, seed=1))
    job = jobs.train_probe(
        alice, tiny_deployment, dataset_id=train.pk, name="marker probe", layer=2, heldout_fraction=0.25
    )
    job = _run(job, host)
    assert job.probe is not None
    return job.probe


# --------------------------------------------------------------------------------------------
# Probes and boards
# --------------------------------------------------------------------------------------------
def test_a_probe_trained_on_a_planted_marker_separates_and_a_random_one_does_not(
    alice: Any, tiny_deployment: Any, host: EngineHost, marker_probe: Probe
) -> None:
    metrics = marker_probe.metrics
    assert metrics["heldout"]["auroc"] > 0.95 and metrics["n_heldout"] == 40
    assert marker_probe.provenance["source"] == "job"
    assert marker_probe.label_names == ["no", "yes"] and marker_probe.layer == 2

    evaluation = _dataset(alice, "marker eval", "labelled", marker_rows(120, seed=2))
    random_probe = _random_probe(alice, tiny_deployment, layer=2)
    board = boards.create_board(
        alice,
        tiny_deployment,
        name="marker",
        dataset_id=evaluation.pk,
        positive_label="yes",
        probe_ids=[marker_probe.pk, random_probe.pk],
    )
    job = _run(boards.evaluate(alice, board), host)
    trained, rand = job.result["probes"]
    assert job.result["n"] == 120 and job.result["positives"] == 60
    assert trained["metrics"]["auroc"] > 0.95
    assert abs(rand["metrics"]["auroc"] - 0.5) < 0.15
    low, high = rand["intervals"]["auroc"]
    assert low <= 0.5 <= high + 0.05
    assert trained["intervals"]["auroc"][0] > rand["intervals"]["auroc"][1]  # the intervals separate
    assert len(trained["roc"]["fpr"]) == len(trained["roc"]["tpr"]) <= 101
    correlation = job.result["agreement"]["correlation"]
    assert correlation[0][0] == 1.0 and correlation[0][1] == correlation[1][0]

    # Per-token traces: one score per token per probe.
    trace = boards.trace(board, 3)
    assert trace["text"] == evaluation.rows[3]["text"] and len(trace["scores"]) == 2
    assert all(len(column) == len(trace["tokens"]) for column in trace["scores"])
    client = Client()
    client.force_login(alice)
    detail = client.get(f"/api/boards/{board.pk}").json()
    assert detail["evaluation"]["id"] == job.pk and detail["probe_ids"] == [marker_probe.pk, random_probe.pk]
    assert client.get(f"/api/boards/{board.pk}/traces/3").json()["tokens"] == trace["tokens"]
    assert client.get(f"/api/boards/{board.pk}/traces/120").status_code == 404


def _forward_counter(host: EngineHost, deployment: Any) -> list[int]:
    hosted = host.model(deployment.name, lambda: load_deployment(deployment))
    calls = [0]
    hosted.engine.core.model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_fifty_probes_on_one_layer_cost_one_activation_pass(
    alice: Any, tiny_deployment: Any, host: EngineHost
) -> None:
    evaluation = _dataset(alice, "eval", "labelled", marker_rows(20, seed=3))
    probes = [_random_probe(alice, tiny_deployment, layer=1, seed=s) for s in range(50)]
    calls = _forward_counter(host, tiny_deployment)
    passes = {}
    for count in (1, 50):
        board = boards.create_board(
            alice,
            tiny_deployment,
            name=f"{count}",
            dataset_id=evaluation.pk,
            probe_ids=[p.pk for p in probes[:count]],
        )
        before = calls[0]
        job = _run(boards.evaluate(alice, board), host)
        passes[count] = calls[0] - before
        assert len(job.result["probes"]) == count
    # One forward pass per example, whatever the number of probes.
    assert passes == {1: 20, 50: 20}


def test_board_rules(alice: Any, bob: Any, carol: Any, team_t: Any, tiny_deployment: Any) -> None:
    data = _dataset(alice, "eval", "labelled", marker_rows(8, seed=4), team=team_t, visibility="team")
    mine = _random_probe(alice, tiny_deployment, layer=1)
    board = boards.create_board(
        alice, tiny_deployment, name="b", dataset_id=data.pk, team=team_t, visibility="team"
    )
    with pytest.raises(ValidationError):  # nothing to evaluate yet
        boards.evaluate(alice, board)
    bobs = _random_probe(bob, tiny_deployment, layer=2, seed=9, team=team_t, visibility="team")
    with pytest.raises(ValidationError):  # alice's private probe is not bob's to add
        boards.add_probes(bob, board, [mine.pk])
    boards.add_probes(bob, board, [bobs.pk])
    boards.add_probes(alice, board, [mine.pk, bobs.pk])  # known ones are kept once
    assert [p.pk for p in boards.board_probes(board)] == [bobs.pk, mine.pk]
    with pytest.raises(ValidationError):
        boards.create_board(alice, tiny_deployment, name="x", dataset_id=data.pk, positive_label="maybe")
    other = _dataset(carol, "carol's", "labelled", marker_rows(8, seed=5))
    with pytest.raises(ValidationError):  # someone else's private dataset reads as unknown
        boards.create_board(alice, tiny_deployment, name="x", dataset_id=other.pk)
    with pytest.raises(ValidationError):  # a board's dataset cannot be deleted under it
        library.delete_dataset(alice, data)


# --------------------------------------------------------------------------------------------
# Vectors and sweeps
# --------------------------------------------------------------------------------------------
def test_a_vector_from_contrastive_pairs_steers_the_marker_probe_and_a_sweep_measures_its_cost(
    alice: Any, tiny_deployment: Any, host: EngineHost, marker_probe: Probe
) -> None:
    contrast = _dataset(alice, "pairs", "contrastive", marker_pairs(48, seed=6))
    job = _run(
        jobs.build_vector(alice, tiny_deployment, dataset_id=contrast.pk, name="marker", layers=[1]),
        host,
    )
    vector = job.vector
    assert vector is not None and vector.layers == [1] and vector.method == "mean_diff"
    assert vector.provenance["dataset"]["content_hash"] == contrast.content_hash
    assert job.result["pairs"] == 48

    scales = [-4.0, 0.0, 4.0, 8.0]
    prompts = ["the quiet river", "a small house over the hill"]
    sweep = _run(
        jobs.sweep(
            alice,
            tiny_deployment,
            vector_id=vector.pk,
            name="sweep",
            layers=[1],
            scales=scales,
            prompts=prompts,
            probe_ids=[marker_probe.pk],
            max_new_tokens=8,
        ),
        host,
    )
    cells = {c["scale"]: c for c in sweep.result["cells"]}
    assert sweep.result["prompts"] == 2 and len(cells) == 4
    # The vector moves the marker probe's score in the expected direction, with the scale.
    shifts = [cells[s]["probe_shift"][0] for s in scales]
    assert shifts[0] < 0 and abs(shifts[1]) < 1e-4 and 0 < shifts[2] < shifts[3]
    # Coherence cost: none at scale 0, growing with the scale.
    assert cells[0.0]["kl_mean"] <= 1e-6 and cells[0.0]["kl_max"] <= 1e-6
    assert 0 < cells[4.0]["kl_mean"] < cells[8.0]["kl_mean"]
    assert all(c["perplexity"] > 1 for c in cells.values())

    # A cell is what a single chat run with the same recipe and settings gives (docs/design.md §4).
    from webapp.jobs.sweep import sweep_spec, transcripts

    _, version = library.create_recipe(alice, tiny_deployment, "cell", sweep_spec(sweep.params, 1, 8.0))
    conversation = playground.create_conversation(alice, tiny_deployment, recipe_version=version)
    (run,) = playground.start_turn(
        alice,
        conversation,
        prompts[1],
        sampling=playground.Sampling(max_new_tokens=8, temperature=0.0, seed=0),
    )
    assert execute_run(run.pk, host).status == "done"
    run.refresh_from_db()
    batches = [bytes(b.data) for b in sweep.batches.order_by("index")]
    cell = json.loads(batches[1])["cells"][3]
    assert (cell["layer"], cell["scale"]) == (1, 8.0)
    assert cell["tokens"] == run.tokens
    assert transcripts(batches, 1, 8.0)[1]["text"] == run.text


def test_sweep_inputs_are_checked(alice: Any, carol: Any, tiny_deployment: Any, marker_probe: Probe) -> None:
    vector = library.upload_vector(alice, tiny_deployment, "v", "v.safetensors", _vector_file(), layer=None)
    good = {
        "vector_id": vector.pk,
        "name": "s",
        "layers": [1],
        "scales": [1.0],
        "prompts": ["hi"],
        "probe_ids": [marker_probe.pk],
    }
    bad = [
        ({"layers": [9]}, "layers"),
        ({"layers": [0]}, "layers"),  # the vector has no direction there
        ({"scales": [float("nan")]}, "scales"),
        ({"scales": [float(s) for s in range(65)]}, "scales"),
        ({"prompts": []}, "prompts"),
        ({"prompts": [""]}, "prompts"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"probe_ids": [marker_probe.pk, marker_probe.pk]}, "probe_ids"),
    ]
    for change, field in bad:
        with pytest.raises(ValidationError) as info:
            jobs.sweep(alice, tiny_deployment, **{**good, **change})
        assert field in info.value.message_dict, change
    with pytest.raises(ValidationError) as info:  # alice's private vector and probe are not carol's
        jobs.sweep(carol, tiny_deployment, **good)
    assert "vector_id" in info.value.message_dict
    assert not Job.objects.filter(kind="sweep").exists()


def _vector_file() -> bytes:
    from interventions.vectors import SteeringVector as Vec
    from interventions.vectors import to_safetensors_bytes

    return to_safetensors_bytes(Vec({1: torch.randn(64, generator=torch.Generator().manual_seed(0))}))


# --------------------------------------------------------------------------------------------
# Failures and resumption
# --------------------------------------------------------------------------------------------
def test_a_failed_job_resumes_from_its_completed_batches(
    alice: Any, tiny_deployment: Any, host: EngineHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _dataset(alice, "train", "labelled", marker_rows(80, seed=7))  # 5 batches of 16
    uninterrupted = _run(
        jobs.train_probe(alice, tiny_deployment, dataset_id=data.pk, name="whole", layer=1, reduce="mean"),
        host,
    )
    job = jobs.train_probe(alice, tiny_deployment, dataset_id=data.pk, name="resumed", layer=1, reduce="mean")

    computed: list[int] = []
    failed: list[bool] = []
    original = TrainProbe.run_batch

    def flaky(self: TrainProbe, ctx: Any, items: list[Any]) -> bytes:
        if len(computed) == 3 and not failed:
            failed.append(True)
            raise RuntimeError("the GPU fell off the bus")
        computed.append(ctx.attempt)
        return original(self, ctx, items)

    monkeypatch.setattr(TrainProbe, "run_batch", flaky)
    assert execute_job(job.pk, host).status == "failed"
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and "GPU fell off" in job.error
    assert (job.done_batches, job.total_batches) == (3, 5)
    kept = list(JobBatch.objects.filter(job=job).values_list("index", "attempt", "created_at"))

    jobs.resume_job(alice, job)
    job = _run(job, host)
    assert computed == [1, 1, 1, 1, 1]  # attempt numbers restart with a resume; only 2 batches redone
    rows = list(JobBatch.objects.filter(job=job).values_list("index", "attempt", "created_at"))
    assert rows[:3] == kept and [i for i, _, _ in rows] == [0, 1, 2, 3, 4]
    # The resumed job made exactly what the uninterrupted one made.
    assert job.probe is not None and uninterrupted.probe is not None
    assert job.probe.content_hash == uninterrupted.probe.content_hash
    assert job.probe.metrics == uninterrupted.probe.metrics


def test_a_changed_dataset_fails_the_job_instead_of_mixing_versions(
    alice: Any, tiny_deployment: Any, host: EngineHost
) -> None:
    data = _dataset(alice, "train", "labelled", marker_rows(8, seed=8))
    job = jobs.train_probe(alice, tiny_deployment, dataset_id=data.pk, name="p", layer=1)
    library.replace_dataset_rows(alice, data, marker_rows(10, seed=9))
    assert execute_job(job.pk, host).status == "failed"
    job.refresh_from_db()
    assert "changed after the job was created" in job.error and not Probe.objects.filter(name="p").exists()


def test_cancel_stops_a_job_and_a_finished_job_is_never_rerun(
    alice: Any, bob: Any, tiny_deployment: Any, host: EngineHost
) -> None:
    data = _dataset(alice, "train", "labelled", marker_rows(8, seed=10))
    job = jobs.train_probe(alice, tiny_deployment, dataset_id=data.pk, name="p", layer=1)
    with pytest.raises(Exception):  # noqa: B017  (bob cannot see it: the API maps this to 404)
        jobs.get_job(bob, job.pk)
    jobs.cancel_job(alice, job)
    assert execute_job(job.pk, host).status == "skipped"
    assert Job.objects.get(pk=job.pk).status == JobStatus.CANCELLED
    with pytest.raises(ValidationError):
        jobs.cancel_job(alice, job)
    jobs.resume_job(alice, job)
    _run(job, host)
    assert execute_job(job.pk, host).status == "skipped"
    assert SteeringVector.objects.count() == 0 and Probe.objects.filter(name="p").count() == 1


def test_each_person_has_a_few_active_jobs_at_most(alice: Any, tiny_deployment: Any, settings: Any) -> None:
    from webapp.playground.services import PlaygroundError

    settings.STEERLAB_MAX_ACTIVE_JOBS = 2
    data = _dataset(alice, "train", "labelled", marker_rows(8, seed=11))
    first = jobs.train_probe(alice, tiny_deployment, dataset_id=data.pk, name="a", layer=1)
    jobs.train_probe(alice, tiny_deployment, dataset_id=data.pk, name="b", layer=1)
    with pytest.raises(PlaygroundError) as info:
        jobs.train_probe(alice, tiny_deployment, dataset_id=data.pk, name="c", layer=1)
    assert info.value.code == "quota" and Job.objects.count() == 2
    client = Client()
    client.force_login(alice)
    body = {"deployment": "tiny", "dataset_id": data.pk, "name": "c", "layer": 1}
    assert client.post("/api/jobs/train-probe", body, content_type="application/json").status_code == 429
    jobs.cancel_job(alice, first)  # an ended job frees its place
    jobs.train_probe(alice, tiny_deployment, dataset_id=data.pk, name="c", layer=1)
    assert Job.objects.count() == 3
