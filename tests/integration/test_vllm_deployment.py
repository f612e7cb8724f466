"""A deployment registered with ``engine="vllm"`` serves live chat through the same worker host.

The session's one vLLM engine (tests/conftest.py) is handed to this process's host under the
deployment's name, as ``load_model`` would have built it, so the session still builds one engine
(the ``vllm_deployment`` fixture, tests/integration/conftest.py).
"""

from __future__ import annotations

from typing import Any

import pytest
from support.live import Socket, run_async

from webapp.asgi import application
from webapp.playground import hosting, services
from webapp.playground.examples import create_example_recipe
from webapp.playground.models import Run, RunStatus
from workers.engines.loading import ENGINES, load_vllm_model

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]


def test_the_deployment_setting_selects_the_vllm_loader() -> None:
    assert ENGINES["vllm"] is load_vllm_model


def test_a_vllm_deployment_streams_a_steered_turn_with_reads_live_adjustment_and_replay(
    alice: Any, vllm_deployment: Any, ws_headers: Any
) -> None:
    version = create_example_recipe(alice, vllm_deployment)
    conversation = services.create_conversation(alice, vllm_deployment, recipe_version=version)
    other = services.create_conversation(alice, vllm_deployment, recipe_version=version)
    headers = ws_headers(alice)
    sampling = {"temperature": 0, "seed": 7, "max_new_tokens": 24}

    async def scenario() -> tuple[Socket, int, int, int, dict[str, Any]]:
        ref = Socket(application, f"/ws/conversations/{other.pk}/", headers)
        assert (await ref.connect())[0]
        plain = (await ref.request(type="generate", content="Once upon a time", sampling=sampling))["runs"][
            0
        ]["id"]
        await ref.finish(plain)
        await ref.close()
        ws = Socket(application, f"/ws/conversations/{conversation.pk}/", headers)
        assert (await ws.connect())[0]
        adjusted = (await ws.request(type="generate", content="Once upon a time", sampling=sampling))["runs"][
            0
        ]["id"]
        await ws.until(lambda f: f.get("run") == adjusted and f["type"] == "token" and f["index"] == 3)
        assert (await ws.request(type="adjust", run=adjusted, intervention=0, scale=-24.0))["type"] == "ack"
        frame = await ws.until(lambda f: f.get("run") == adjusted and f["type"] == "adjusted")
        final = await ws.finish(adjusted)
        assert final["status"] == "done" and final["reason"] == "length"
        status = await ws.request(type="status")
        assert status["engine"]["engine"] == "vllm"
        replay = (await ws.request(type="replay", run=adjusted))["runs"][0]["id"]
        await ws.finish(replay)
        await ws.close()
        return ws, plain, adjusted, replay, frame

    ws, plain, adjusted, replay, frame = run_async(scenario())
    runs = {r.pk: r for r in Run.objects.all()}
    step = frame["step"]
    assert step >= 4 and runs[adjusted].adjustments == [{"step": step, "index": 0, "scale": -24.0}]
    assert runs[adjusted].tokens[:step] == runs[plain].tokens[:step]
    assert runs[adjusted].tokens != runs[plain].tokens
    assert runs[adjusted].status == RunStatus.DONE and ws.tokens(adjusted) == runs[adjusted].tokens
    # Probe scores for every generated token, streamed beside the tokens.
    generated_reads = [f for f in ws.of(adjusted, "reads") if f["index"] >= 0]
    assert [f["index"] for f in generated_reads] == list(range(24))
    assert runs[replay].status == RunStatus.DONE and runs[replay].tokens == runs[adjusted].tokens


def test_jobs_run_on_a_vllm_deployment(alice: Any, vllm_deployment: Any) -> None:
    """Collect requests (probe training, board evaluation) and sweeps (steered generation with
    logits, teacher forcing) through the vLLM engine: the planted marker is found, and a sweep's
    KL is 0 at scale 0 and grows with the scale. (A host of its own: an earlier test's loop, which
    the embedded host was bound to, has closed.)"""
    from webapp.compare import services as boards
    from webapp.jobs import services as jobs
    from webapp.jobs.runner import execute_job
    from webapp.library import services as library
    from webapp.playground.examples import marker_rows

    host = hosting.get_host()
    train = library.create_dataset_rows(alice, "train", "labelled", marker_rows(64, seed=1))
    job = jobs.train_probe(alice, vllm_deployment, dataset_id=train.pk, name="marker", layer=2)
    assert execute_job(job.pk, host).status == "done"
    job.refresh_from_db()
    assert job.probe is not None and job.probe.metrics["heldout"]["auroc"] > 0.95

    evaluation = library.create_dataset_rows(alice, "eval", "labelled", marker_rows(32, seed=2))
    board = boards.create_board(
        alice, vllm_deployment, name="b", dataset_id=evaluation.pk, probe_ids=[job.probe.pk]
    )
    evaluate = boards.evaluate(alice, board)
    assert execute_job(evaluate.pk, host).status == "done"
    evaluate.refresh_from_db()
    assert evaluate.result["probes"][0]["metrics"]["auroc"] > 0.95

    version = create_example_recipe(alice, vllm_deployment)
    vector_id = int(version.spec["interventions"][0]["vector"].removeprefix("vec_"))
    layer = version.spec["interventions"][0]["layer"]
    sweep = jobs.sweep(
        alice,
        vllm_deployment,
        vector_id=vector_id,
        name="s",
        layers=[layer],
        scales=[0.0, 2.0, 8.0],
        prompts=["Once upon a time"],
        probe_ids=[],  # a sweep without reads: the baseline runs with no interventions at all
        max_new_tokens=6,
    )
    assert execute_job(sweep.pk, host).status == "done"
    sweep.refresh_from_db()
    kl = [cell["kl_mean"] for cell in sweep.result["cells"]]
    assert kl[0] <= 1e-6 < kl[1] < kl[2]
