"""Jobs and comparison boards in a real browser, end to end, as a new user meets them.

Sign up -> upload a labelled dataset with a planted marker (every "yes" row ends with QQQ) ->
write a second one in the dataset editor (pasted lines; an empty label is caught at its row
first) -> train two probes on it through the Train probe form (layers 2 and 1), each followed
live to its held-out metrics -> a board comparing them on the second dataset -> evaluate, with
live progress -> the sortable metrics table (one row per probe, AUROC with its interval), the
agreement matrix (both measures), the ROC chart and one example's per-token trace (one cell per
token). Screenshots of the jobs and board pages are saved as artifacts; axe-core checks both.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import torch
from playwright.sync_api import expect
from support.browser import serious_violations, sign_up

from interventions.probes import LinearProbe
from interventions.probes import to_safetensors_bytes as probe_bytes

JOB_TIMEOUT_MS = 180_000
FILLER = [
    "river",
    "stone",
    "bright",
    "cloud",
    "paper",
    "window",
    "garden",
    "silver",
    "music",
    "quiet",
    "morning",
    "table",
    "yellow",
    "forest",
    "letter",
    "market",
    "bridge",
    "candle",
    "orange",
    "winter",
    "velvet",
    "harbor",
    "lantern",
    "meadow",
    "pencil",
]
MARKER = "QQQ"


def _planted(seed: int, n: int = 64) -> list[dict[str, str]]:
    """`n` labelled rows: "yes" rows end with the marker word, "no" rows do not."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = " ".join(rng.choice(FILLER) for _ in range(rng.randint(3, 8)))
        rows.append(
            {"text": f"{words} {MARKER}", "label": "yes"} if i % 2 == 0 else {"text": words, "label": "no"}
        )
    rng.shuffle(rows)
    return rows


def _option_value(select: Any, text: str) -> str:
    """The value of the first option of `select` whose text contains `text` (waits for it)."""
    option = select.locator("option", has_text=text).first
    expect(option).to_be_attached()
    value = option.get_attribute("value")
    assert value, f"no option {text!r}"
    return value


def _upload_dataset(page: Any, tmp_path: Path, name: str, rows: list[dict[str, str]]) -> None:
    file = tmp_path / "planted.jsonl"
    file.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    page.goto("/app/library?section=datasets")
    form = page.get_by_role("region", name="Upload a dataset")
    form.get_by_label("Name").fill(name)
    form.get_by_label("Kind").select_option("labelled")
    form.get_by_label("File").set_input_files(str(file))
    form.get_by_role("button", name="Upload dataset").click()
    expect(page.get_by_role("table", name="Datasets")).to_contain_text(name)


def _write_dataset(page: Any, name: str, rows: list[dict[str, str]]) -> None:
    """The dataset editor: pasted TSV lines, an empty label caught at its row, then created."""
    page.goto("/app/library?section=datasets")
    page.get_by_role("link", name="New dataset").click()
    page.wait_for_url("**/app/datasets/new")
    page.get_by_label("Name", exact=True).fill(name)
    lines = "text\tlabel\n" + "\n".join(f"{row['text']}\t{row['label']}" for row in rows)
    page.get_by_label("Lines to add").fill(lines)
    page.get_by_role("button", name="Add to the rows").click()
    expect(page.get_by_role("region", name="Paste rows")).to_contain_text(
        f"Added {len(rows)} rows (the header line was skipped)"
    )
    editor = page.get_by_role("table", name="Rows")
    expect(editor.get_by_label("Row 1 text")).to_have_value(rows[0]["text"])
    expect(page.get_by_test_id("label-counts")).to_contain_text("yes: 32")

    # A row with a text and no label: refused at the row, nothing is created.
    page.get_by_role("button", name="Add row").click()
    new_row = len(rows) + 1
    page.get_by_label(f"Row {new_row} text").fill("a row without its label")
    page.get_by_role("button", name="Create dataset").click()
    expect(page.get_by_text(f"Row {new_row}: The label is empty.")).to_be_visible()
    assert page.url.endswith("/app/datasets/new")
    page.get_by_role("button", name=f"Delete row {new_row}").click()

    page.get_by_role("button", name="Create dataset").click()
    page.wait_for_url(re.compile(r".*/app/datasets/\d+$"))
    expect(
        page.get_by_role("status").filter(has_text=f"Created the dataset “{name}” ({len(rows)} rows)")
    ).to_be_visible()


def _train_probe(page: Any, name: str, dataset: str, layer: int) -> dict[str, Any]:
    """Start a probe through the Train probe form, follow it live to its held-out metrics."""
    page.goto("/app/jobs?form=probe")
    form = page.get_by_role("region", name="Train a probe")
    form.get_by_label("Name").fill(name)
    datasets = form.get_by_label("Dataset")
    datasets.select_option(_option_value(datasets, dataset))
    labels = form.get_by_label("Positive label")
    expect(labels.locator('option[value="yes"]')).to_be_attached()  # the dataset's labels loaded
    labels.select_option("yes")
    form.get_by_label("Layer").fill(str(layer))
    form.get_by_role("button", name="Start training").click()

    latest = page.get_by_test_id("latest-job")
    expect(latest.get_by_role("progressbar", name=f"Progress of {name}")).to_be_visible()
    expect(latest).to_have_attribute("data-status", "done", timeout=JOB_TIMEOUT_MS)
    expect(latest.get_by_test_id("job-progress")).to_contain_text("4 / 4 batches")
    expect(latest).to_contain_text("held-out AUROC")
    metrics = latest.get_by_role("table", name=f"Metrics of {name}")
    auroc = metrics.locator("tr[data-metric=auroc] td")
    expect(auroc.nth(1)).to_have_text(re.compile(r"^\[\d\.\d{3}, \d\.\d{3}\]$"))  # the 95% interval
    jobs: dict[str, Any] = page.request.get("/api/jobs", params={"kind": "train_probe", "q": name}).json()
    job = next(j for j in jobs["items"] if j["name"] == name)
    assert job["status"] == "done" and job["probe_id"], job
    heldout = job["result"]["metrics"]["heldout"]
    assert auroc.nth(0).inner_text() == f"{heldout['auroc']:.3f}"
    assert heldout["auroc"] >= 0.9, heldout  # the planted marker is linearly readable
    expect(latest.get_by_role("link", name=f"Probe prb_{job['probe_id']}")).to_be_visible()
    return job


def _create_board(page: Any, name: str, dataset: str, probes: list[str]) -> int:
    page.goto("/app/boards")
    form = page.get_by_role("region", name="New board")
    form.get_by_label("Name").fill(name)
    datasets = form.get_by_label("Evaluation set")
    datasets.select_option(_option_value(datasets, dataset))
    labels = form.get_by_label("Positive label")
    expect(labels.locator('option[value="yes"]')).to_be_attached()
    labels.select_option("yes")
    picker = form.get_by_test_id("probe-picker")
    for probe in probes:
        picker.get_by_role("checkbox", name=re.compile(rf"^{re.escape(probe)}\b")).check()
    form.get_by_label("Evaluate right away").uncheck()
    form.get_by_role("button", name="Create board").click()
    page.wait_for_url(re.compile(r".*/app/boards/\d+$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(name)
    return int(page.url.rsplit("/", 1)[1])


def test_a_new_user_trains_probes_and_compares_them_on_a_board(
    page: Any, artifacts: Path, tmp_path: Path
) -> None:
    sign_up(page, "ivy")
    _upload_dataset(page, tmp_path, "planted train", _planted(1))
    _write_dataset(page, "planted eval", _planted(2))

    _train_probe(page, "marker L2", "planted train", 2)
    _train_probe(page, "marker L1", "planted train", 1)
    page.get_by_role("heading", name="All jobs").scroll_into_view_if_needed()
    jobs = page.get_by_role("table", name="Jobs")
    expect(jobs.locator("tbody tr")).to_have_count(2)
    expect(jobs.locator("tbody tr[data-status=done]")).to_have_count(2)
    page.screenshot(path=str(artifacts / "jobs.png"), full_page=True)
    assert serious_violations(page) == [], "jobs.png"

    board_id = _create_board(page, "marker board", "planted eval", ["marker L2", "marker L1"])
    expect(page.get_by_role("table", name="Probes on the board").locator("tbody tr")).to_have_count(2)
    page.get_by_role("button", name="Evaluate", exact=True).click()
    progress = page.get_by_test_id("evaluation-progress")
    expect(progress.get_by_role("progressbar", name="Progress of the evaluation")).to_be_visible()
    expect(progress).to_have_attribute("data-status", "done", timeout=JOB_TIMEOUT_MS)

    # The metrics table: one row per probe, each metric with its interval; sortable.
    table = page.get_by_role("table", name="Probe metrics")
    rows = table.locator("tbody tr")
    expect(rows).to_have_count(2)
    for i in range(2):
        cell = rows.nth(i).locator("td[data-metric=auroc]")
        expect(cell.locator(".num")).to_have_text(re.compile(r"^\d\.\d{3}$"))
        expect(cell.locator(".interval")).to_have_text(re.compile(r"^\[\d\.\d{3}, \d\.\d{3}\]$"))
    auroc_header = table.get_by_role("columnheader", name=re.compile("^AUROC"))
    expect(auroc_header).to_have_attribute("aria-sort", "descending")
    auroc_header.get_by_role("button").click()
    expect(auroc_header).to_have_attribute("aria-sort", "ascending")
    probe_header = table.get_by_role("columnheader", name=re.compile("^Probe"))
    probe_header.get_by_role("button").click()
    expect(probe_header).to_have_attribute("aria-sort", "ascending")
    expect(auroc_header).to_have_attribute("aria-sort", "none")
    expect(rows.nth(0).get_by_role("rowheader")).to_contain_text("marker L1")
    board = page.request.get(f"/api/boards/{board_id}").json()
    aurocs = [p["metrics"]["auroc"] for p in board["evaluation"]["result"]["probes"]]
    assert all(a is not None and a >= 0.9 for a in aurocs), aurocs

    # The agreement matrix, both measures; the ROC curves.
    correlation = page.get_by_role("table", name="Agreement: Correlation")
    expect(correlation.locator("tbody tr")).to_have_count(2)
    expect(correlation.locator("tbody td")).to_have_count(4)
    expect(correlation.locator("tbody tr").first.locator("td").first).to_have_text("1.00")
    page.get_by_role("button", name="Cohen's kappa").click()
    expect(page.get_by_role("table", name="Agreement: Cohen's kappa").locator("tbody td")).to_have_count(4)
    roc = page.get_by_role("img", name=re.compile("^ROC curves"))
    expect(roc.locator("canvas")).to_have_count(1)
    expect(
        page.get_by_role("list", name=re.compile("^Legend: ROC curves")).get_by_role("listitem")
    ).to_have_count(2)

    # A trace: one cell per token, every probe's scores in the chart.
    traces = page.get_by_role("region", name="Per-token traces")
    traces.get_by_label("Example", exact=True).fill("3")
    trace = traces.get_by_test_id("trace")
    expect(trace).to_have_attribute("data-example", "3")
    expected = page.request.get(f"/api/boards/{board_id}/traces/3").json()
    assert len(expected["scores"]) == 2 and all(len(s) == len(expected["tokens"]) for s in expected["scores"])
    cells = trace.locator(".tok")
    expect(cells).to_have_count(len(expected["tokens"]))
    assert "".join(cells.all_text_contents()) == "".join(expected["tokens"])
    scores = cells.evaluate_all("cells => cells.map(c => Number(c.dataset.score))")
    assert scores == [round(s, 4) for s in expected["scores"][0]] or scores == expected["scores"][0]
    expect(trace.get_by_role("img", name=re.compile("^Every probe's score per token"))).to_be_visible()
    traces.get_by_role("button", name="Next").click()
    expect(trace).to_have_attribute("data-example", "4")

    page.get_by_role("heading", level=1).scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "board.png"), full_page=True)
    assert serious_violations(page) == [], "board.png"


def _upload_probe(page: Any, tmp_path: Path, name: str, layer: int) -> None:
    """A random probe (the sweep reads one along), uploaded through the library."""
    hidden = page.request.get("/api/deployments").json()["items"][0]["hidden_size"]
    file = tmp_path / "probe.safetensors"
    weights = torch.randn(hidden, generator=torch.Generator().manual_seed(3)) / hidden**0.5
    file.write_bytes(probe_bytes(LinearProbe(weights, 0.0)))
    page.goto("/app/library?section=probes")
    form = page.get_by_role("region", name="Upload a probe")
    form.get_by_label("Name").fill(name)
    form.get_by_label("Layer").fill(str(layer))
    form.get_by_label("File").set_input_files(str(file))
    form.get_by_role("button", name="Upload probe").click()
    expect(page.get_by_role("table", name="Probes")).to_contain_text(name)


def test_a_user_builds_a_vector_and_sweeps_it(page: Any, artifacts: Path, tmp_path: Path) -> None:
    """Contrastive pairs written in the editor -> Build vector -> a sweep over two layers and
    three scales, reading a probe -> the heatmap (metric chosen), the curves and one cell's
    transcripts."""
    sign_up(page, "jack")
    _upload_probe(page, tmp_path, "random reader", 3)
    page.goto("/app/datasets/new")
    page.get_by_label("Name", exact=True).fill("moods")
    page.get_by_label("Kind").select_option("contrastive")
    pairs = [(f"I love the {w} so much", f"I hate the {w} so much") for w in FILLER[:16]]
    page.get_by_label("Lines to add").fill("\n".join(f"{p},{n}" for p, n in pairs))
    page.get_by_role("button", name="Add to the rows").click()
    expect(page.get_by_role("table", name="Rows").get_by_label("Row 16 negative")).to_have_value(pairs[15][1])
    page.get_by_role("button", name="Create dataset").click()
    page.wait_for_url(re.compile(r".*/app/datasets/\d+$"))

    page.goto("/app/jobs?form=vector")
    form = page.get_by_role("region", name="Build a steering vector")
    form.get_by_label("Name").fill("mood direction")
    datasets = form.get_by_label("Dataset")
    datasets.select_option(_option_value(datasets, "moods"))
    form.get_by_label("Layers").fill("1, 9")  # out of range: the server's message shows at the field
    form.get_by_role("button", name="Start building").click()
    expect(form.locator(".field-error")).to_contain_text("out of range")
    form.get_by_label("Layers").fill("1-2")
    form.get_by_role("button", name="Start building").click()
    latest = page.get_by_test_id("latest-job")
    # The latest job shown is this one before its status is read (not a job from before).
    expect(latest.get_by_role("progressbar", name="Progress of mood direction")).to_be_visible()
    expect(latest).to_have_attribute("data-status", "done", timeout=JOB_TIMEOUT_MS)
    expect(latest).to_contain_text("from 16 pairs")

    page.get_by_role("button", name="New sweep").click()
    form = page.get_by_role("region", name="New sweep")
    form.get_by_label("Name").fill("mood sweep")
    vectors = form.get_by_label("Steering vector")
    vectors.select_option(_option_value(vectors, "mood direction"))
    expect(form.get_by_label("Layers")).to_have_value("1, 2")
    form.get_by_label("Scales").fill("-4, 0, 4")
    form.get_by_label("Prompts").fill("Tell me about the sea.\nWrite a short poem.")
    form.get_by_label("Max new tokens").fill("8")
    form.get_by_test_id("probe-picker").get_by_role("checkbox", name=re.compile("^random reader")).check()
    form.get_by_role("button", name="Start the sweep").click()
    latest = page.get_by_test_id("latest-job")
    # Right after the click the latest job shown can still be the vector's, already done.
    expect(latest.get_by_role("progressbar", name="Progress of mood sweep")).to_be_visible()
    expect(latest).to_have_attribute("data-status", "done", timeout=JOB_TIMEOUT_MS)
    expect(latest).to_contain_text("6 cells on 2 prompts")
    latest.get_by_role("link", name="Sweep results").click()
    page.wait_for_url(re.compile(r".*/app/jobs/\d+$"))

    heatmap = page.get_by_role("table", name=re.compile("^KL mean .* by layer and scale$"))
    expect(heatmap.locator("tbody tr")).to_have_count(2)
    expect(heatmap.locator("tbody td button")).to_have_count(6)
    page.get_by_label("Metric").select_option("perplexity")
    heatmap = page.get_by_role("table", name=re.compile("^Perplexity .* by layer and scale$"))
    expect(page.get_by_role("img", name=re.compile("^Perplexity .* against the scale"))).to_be_visible()
    heatmap.get_by_role("button", name=re.compile(r"^Layer 2, scale 4:")).click()
    page.get_by_label("Metric").select_option("shift:0")  # the first probe's shift
    expect(
        page.get_by_role("table", name=re.compile(r"^Probe shift: prb_\d+ by layer and scale$"))
    ).to_be_visible()
    transcripts = page.get_by_role("region", name="Transcripts: layer 2, scale 4")
    expect(transcripts.get_by_test_id("transcript")).to_have_count(2)
    expect(transcripts.get_by_test_id("transcript").first).to_contain_text("Tell me about the sea.")
    expect(transcripts.get_by_role("img", name=re.compile("^KL per generated token"))).to_have_count(2)
    page.screenshot(path=str(artifacts / "sweep.png"), full_page=True)
    assert serious_violations(page) == [], "sweep.png"
