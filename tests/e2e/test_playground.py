"""The playground in a real browser, end to end, as a new user meets it.

Sign up -> upload a vector and a probe (a pickled file first: refused) -> build a recipe (with an
inline validation error first) -> chat -> move a slider during the generation and check, against
the run log and an unadjusted run, that only the tokens from the acknowledged step on changed ->
one heatmap cell per generated token, hover and focus for the score and the logit lens -> replay
gives the same tokens -> compare mode streams two answers together -> reload mid-stream, and drop
the socket mid-stream: the transcript completes without gaps or duplicates. Screenshots of the
library, the recipe editor and the chat are saved as artifacts, and axe-core checks each page.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from playwright.sync_api import expect
from support.browser import serious_violations, sign_up
from support.stops import stop_in

from interventions.probes import LinearProbe
from interventions.probes import to_safetensors_bytes as probe_bytes
from interventions.vectors import SteeringVector
from interventions.vectors import to_safetensors_bytes as vector_bytes

RUN_TIMEOUT_MS = 60_000
# Keeps the page's websockets reachable, so that the test can drop them as a network would.
KEEP_SOCKETS = """
(() => {
  const Native = window.WebSocket;
  window.__sockets = [];
  window.WebSocket = class extends Native {
    constructor(...args) { super(...args); window.__sockets.push(this); }
  };
})();
"""
MAX_TOKENS = 40


def _files(tmp_path: Path, hidden: int, layer: int) -> tuple[Path, Path, Path]:
    g = torch.Generator().manual_seed(7)
    vector = tmp_path / "direction.safetensors"
    vector.write_bytes(
        vector_bytes(SteeringVector({layer: torch.randn(hidden, generator=g)}, method="imported"))
    )
    probe = tmp_path / "probe.safetensors"
    probe.write_bytes(probe_bytes(LinearProbe(torch.randn(hidden, generator=g) / hidden**0.5, 0.0)))
    pickled = tmp_path / "evil.pt"
    torch.save({"layer": torch.zeros(hidden)}, pickled)  # a pickle: must be refused, never loaded
    return vector, probe, pickled


def _upload(page: Any, region: str, name: str, file: Path, button: str) -> None:
    form = page.get_by_role("region", name=region)
    form.get_by_label("Name").fill(name)
    form.get_by_label("File").set_input_files(str(file))
    form.get_by_role("button", name=button).click()


def _build_library(page: Any, tmp_path: Path, model: dict[str, Any], artifacts: Path) -> None:
    vector, probe, pickled = _files(tmp_path, model["hidden_size"], model["num_layers"] // 2)
    page.goto("/app/library")
    _upload(page, "Upload a vector", "pickled direction", pickled, "Upload vector")
    expect(page.get_by_role("region", name="Upload a vector").get_by_role("alert")).to_be_visible()
    _upload(page, "Upload a vector", "e2e direction", vector, "Upload vector")
    expect(page.get_by_role("table", name="Vectors")).to_contain_text("e2e direction")
    expect(page.get_by_role("table", name="Vectors")).not_to_contain_text("pickled direction")

    page.get_by_role("button", name="Probes").click()
    probes = page.get_by_role("region", name="Upload a probe")
    probes.get_by_label("Layer").fill(str(model["num_layers"] - 1))
    _upload(page, "Upload a probe", "e2e probe", probe, "Upload probe")
    expect(page.get_by_role("table", name="Probes")).to_contain_text("e2e probe")
    page.get_by_role("button", name="Vectors").click()
    page.get_by_role("table", name="Vectors").get_by_text("e2e direction").click()
    expect(page.get_by_role("table", name="L2 norm per layer")).to_be_visible()
    page.screenshot(path=str(artifacts / "library.png"), full_page=True)
    assert serious_violations(page) == [], "library.png"


def _add(page: Any, op: str) -> Any:
    page.get_by_label("New intervention").select_option(op)
    page.get_by_role("button", name="Add intervention").click()
    count = page.get_by_test_id("intervention").count()
    return page.get_by_role("group", name=f"Intervention {count}")


def _choose_first(select: Any) -> None:
    values = select.locator("option").evaluate_all("options => options.map(o => o.value).filter(Boolean)")
    assert values, "the picker lists nothing"
    select.select_option(values[0])


def _build_recipe(page: Any, model: dict[str, Any], artifacts: Path) -> None:
    page.goto("/app/recipes/new")
    page.get_by_label("Name", exact=True).fill("e2e recipe")
    steer = _add(page, "steer")
    _choose_first(steer.get_by_label("Steering vector"))
    steer.get_by_label("Scale").fill("8")
    steer.get_by_label("Positions").select_option("generated")
    probe = _add(page, "probe")
    _choose_first(probe.get_by_label("Probe", exact=True))
    _add(page, "logit_lens")

    # A layer out of range: the message appears at the field, and nothing is created.
    steer.get_by_label("Layer").fill("99")
    page.get_by_role("button", name="Create recipe").click()
    expect(steer.locator(".field-error")).to_contain_text("layer")
    assert page.url.endswith("/app/recipes/new")

    steer.get_by_label("Layer").fill(str(model["num_layers"] // 2))
    page.get_by_role("button", name="Create recipe").click()
    page.wait_for_url(re.compile(r".*/app/recipes/\d+$"))
    expect(page.get_by_role("button", name=re.compile(r"^v1 "))).to_be_visible()
    page.screenshot(path=str(artifacts / "recipe-editor.png"), full_page=True)
    assert serious_violations(page) == [], "recipe-editor.png"


def _start_conversation(page: Any) -> None:
    page.goto("/app/chat")
    recipe = page.get_by_label("Recipe", exact=True)
    value = recipe.locator("option", has_text="e2e recipe").first.get_attribute("value")
    recipe.select_option(value)
    page.get_by_role("button", name="Start the conversation").click()
    page.wait_for_url(re.compile(r".*/app/chat/\d+$"))
    expect(page.get_by_test_id("connection")).to_have_text("connected")


def _send(page: Any, text: str, *, compare: bool = False, stop: str = "") -> None:
    page.get_by_label("Max new tokens").fill(str(MAX_TOKENS))
    page.get_by_label("Temperature").fill("0")
    page.get_by_label("Stop at").fill(stop)
    compare_box = page.get_by_label("Compare with the unsteered model")
    if compare_box.is_checked() != compare:
        compare_box.click()
    message = page.get_by_role("textbox", name="Message")
    message.fill(text)
    message.press("Enter")  # the keyboard sends


def _last_turn_runs(page: Any, count: int = 1) -> Any:
    runs = page.get_by_test_id("turn").last.locator("article.run")
    expect(runs).to_have_count(count)
    return runs


def _wait_tokens(run: Any, at_least: int) -> None:
    expect(run.locator(".tok").nth(at_least - 1)).to_be_attached(timeout=RUN_TIMEOUT_MS)


def _finished(page: Any, run: Any) -> dict[str, Any]:
    expect(run).to_have_attribute("data-status", "done", timeout=RUN_TIMEOUT_MS)
    logged: dict[str, Any] = page.request.get(f"/api/runs/{run.get_attribute('data-run')}").json()
    return logged


def test_a_new_user_builds_a_recipe_steers_live_compares_and_resumes(
    page: Any, artifacts: Path, tmp_path: Path
) -> None:
    page.add_init_script(KEEP_SOCKETS)
    sign_up(page, "erin")
    model = page.request.get("/api/deployments").json()["items"][0]
    _build_library(page, tmp_path, model, artifacts)
    _build_recipe(page, model, artifacts)

    # The control: the same prompt, greedy, without touching the slider.
    _start_conversation(page)
    _send(page, "Tell me about the sea.")
    control = _finished(page, _last_turn_runs(page).first)
    assert len(control["tokens"]) == MAX_TOKENS

    # A stop sequence: the same turn ends before two characters the control wrote in its first half.
    text = control["text"]
    stop = stop_in(text)
    _start_conversation(page)
    _send(page, "Tell me about the sea.", stop=stop)
    stopped = _finished(page, _last_turn_runs(page).first)
    assert (stopped["finish_reason"], stopped["sampling"]["stop"]) == ("stop", [stop])
    assert stopped["text"] == text[: text.index(stop)]
    assert stopped["tokens"] == control["tokens"][: len(stopped["tokens"])]
    assert len(stopped["tokens"]) < MAX_TOKENS

    # Live steering: the slider moves while tokens stream.
    _start_conversation(page)
    _send(page, "Tell me about the sea.")
    run = _last_turn_runs(page).first
    _wait_tokens(run, 5)
    page.get_by_label(re.compile(r"^Scale of #0 steer")).fill("-32")
    steered = _finished(page, run)
    assert len(steered["adjustments"]) == 1, steered["adjustments"]
    adjustment = steered["adjustments"][0]
    assert adjustment["index"] == 0 and adjustment["scale"] == -32, adjustment
    step = adjustment["step"]
    assert 5 <= step < MAX_TOKENS, adjustment
    # Before the acknowledged step the tokens are the control's; from it on, they changed.
    assert steered["tokens"][:step] == control["tokens"][:step]
    assert steered["tokens"][step:] != control["tokens"][step:]
    expect(run.get_by_role("list", name=f"Adjustments of run {steered['id']}")).to_contain_text(
        f"from token {step}"
    )

    # The heatmap: one cell per generated token, each with the probe's score.
    cells = run.locator(".tok")
    expect(cells).to_have_count(len(steered["tokens"]))
    scores = cells.evaluate_all("cells => cells.map(c => c.dataset.score)")
    assert all(score not in ("", None) for score in scores), scores
    cells.nth(3).hover()
    detail = run.get_by_test_id("token-detail")
    expect(detail).to_contain_text("Token 3")
    expect(detail).to_contain_text("#1 probe")
    expect(detail.get_by_role("table")).to_be_visible()  # the logit lens' top-k
    cells.nth(4).focus()  # the keyboard reaches every token too
    expect(detail).to_contain_text("Token 4")

    # Replay: the run again, with its adjustment at the same step, gives the same tokens.
    run.get_by_role("button", name=f"Replay run {steered['id']}").click()
    expect(page.get_by_test_id("turn").last.locator(".prompt")).to_have_text(f"Replay of run {steered['id']}")
    replayed = _finished(page, _last_turn_runs(page).first)
    assert replayed["replay_of"] == steered["id"]
    assert replayed["tokens"] == steered["tokens"]

    # Compare mode: the baseline and the steered answer stream together.
    _send(page, "Compare the two.", compare=True)
    baseline, steered_run = _last_turn_runs(page, 2).nth(0), _last_turn_runs(page, 2).nth(1)
    expect(baseline.get_by_role("heading")).to_contain_text("baseline")
    expect(steered_run.get_by_role("heading")).to_contain_text("steered")
    _wait_tokens(baseline, 2)
    _wait_tokens(steered_run, 2)
    assert baseline.get_attribute("data-status") == "running"
    assert steered_run.get_attribute("data-status") == "running"
    first, second = _finished(page, baseline), _finished(page, steered_run)
    assert first["compare_group"] == second["compare_group"] is not None
    # Each ran to the length limit or to the end-of-sequence token. (Which, depends on the history:
    # the live adjustment earlier lands at a step the timing decides, and so does that answer.)
    for finished in (first, second):
        assert len(finished["tokens"]) == MAX_TOKENS or finished["finish_reason"] == "stop", finished
    page.screenshot(path=str(artifacts / "chat.png"), full_page=True)
    assert serious_violations(page) == [], "chat.png"

    # A reload mid-stream: the transcript completes, each token once, in order.
    _send(page, "And once more.")
    _wait_tokens(_last_turn_runs(page).first, 4)
    page.reload()
    run = _last_turn_runs(page).first
    logged = _finished(page, run)
    cells = run.locator(".tok")
    expect(cells).to_have_count(len(logged["tokens"]))
    assert "".join(cells.all_text_contents()) == logged["text"]
    indices = cells.evaluate_all("cells => cells.map(c => Number(c.dataset.index))")
    assert indices == list(range(len(logged["tokens"])))

    # A dropped socket (the page stays): the app reconnects, resumes, and nothing is lost or doubled.
    _send(page, "Keep going.")
    run = _last_turn_runs(page).first
    _wait_tokens(run, 4)
    page.evaluate("window.__sockets.forEach((socket) => socket.close())")
    expect(page.get_by_test_id("connection")).to_have_text("reconnecting…")
    expect(page.get_by_test_id("connection")).to_have_text("connected")
    logged = _finished(page, run)
    assert len(logged["tokens"]) == MAX_TOKENS  # the run went on: it was resumed, not stopped
    cells = run.locator(".tok")
    expect(cells).to_have_count(MAX_TOKENS)
    assert "".join(cells.all_text_contents()) == logged["text"]


def test_the_recipe_form_never_saves_a_value_that_was_not_typed(page: Any) -> None:
    """A cleared scale, 1e400, empty dimension indices and an empty slice start: each is an error
    at its field, all shown at once, and nothing is created; once fixed, what was typed is saved."""
    sign_up(page, "typist")
    page.goto("/app/recipes/new")
    page.get_by_label("Name", exact=True).fill("typed values")
    first, second = _add(page, "ablate"), _add(page, "ablate")
    first.get_by_label("Scale").fill("")
    first.get_by_label("Positions").select_option("slice")
    first.get_by_label("Start").fill("")
    second.get_by_label("Scale").fill("1e400")
    second.get_by_label("Dimensions").select_option("list")
    page.get_by_role("button", name="Create recipe").click()

    expect(page.get_by_text("4 fields need a valid value before the recipe can be saved")).to_be_visible()
    expect(first.get_by_text("The scale is required")).to_be_visible()
    expect(first.get_by_text("The slice's start is required")).to_be_visible()
    expect(
        second.get_by_text("The scale must be a number from -10000 to 10000, not “1e400”.")
    ).to_be_visible()
    expect(second.get_by_text(re.compile(r"^Dimension indices: "))).to_be_visible()
    assert page.url.endswith("/app/recipes/new")
    assert page.request.get("/api/recipes").json()["count"] == 0

    first.get_by_label("Scale").fill("0.5")
    first.get_by_label("Start").fill("1")
    second.get_by_label("Scale").fill("1")
    second.get_by_label("Dimension indices").fill("3, 4")
    page.get_by_role("button", name="Create recipe").click()
    page.wait_for_url(re.compile(r".*/app/recipes/\d+$"))
    recipe = int(page.url.rsplit("/", 1)[1])
    spec = page.request.get(f"/api/recipes/{recipe}/versions/1").json()["spec"]["interventions"]
    assert (spec[0]["scale"], spec[0]["positions"]) == (0.5, {"start": 1, "stop": None, "step": 1})
    assert (spec[1]["scale"], spec[1]["dims"]) == (1.0, [3, 4])
