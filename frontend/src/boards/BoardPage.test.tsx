import { render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { MemoryRouter, Route, Routes } from "react-router";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { FakeSocket } from "../jobs/fakeSocket";
import { answer, json, paged, requests } from "../library/fakeFetch";
import { BoardPage } from "./BoardPage";

await vi.hoisted(async () => {
  const { fakeFetch } = await import("../library/fakeFetch");
  vi.stubGlobal("fetch", fakeFetch);
});

vi.mock("uplot", () => ({
  default: class {
    static paths = {};
    destroy() {
      /* nothing drawn */
    }
  },
}));

const stamp = { created_at: "2024-01-01T00:00:00Z", updated_at: "2024-01-01T00:00:00Z" };
const libraryProbe = (id: number, name: string, layer: number) => ({
  ...stamp, id, name, description: "", owner: id === 1 ? "alice" : "bob", team_id: null, visibility: "public", public_id: `prb_${id}`,
  deployment: "tiny", layer, point: "resid_post", width: 64, bias: 0, label_names: ["no", "yes"], content_hash: "h", provenance: {},
  forked_from_id: null, metrics: { heldout: { auroc: id === 1 ? 0.99 : 0.8, accuracy: 1, f1: 1, ece: 0, n: 10, positives: 5 } },
});
const evaluated = (id: number, name: string, layer: number, auroc: number) => ({
  id, public_id: `prb_${id}`, name, owner: id === 1 ? "alice" : "bob", layer, point: "resid_post",
  metrics: { accuracy: auroc - 0.05, auroc, f1: auroc - 0.1, ece: 0.05, n: 64, positives: 32 },
  intervals: { accuracy: [0.8, 0.95], auroc: [auroc - 0.04, 1], f1: [0.7, 0.9], ece: [0.01, 0.09] },
  roc: { fpr: [0, 0, 1], tpr: [0, 1, 1] },
});
const evaluation = {
  ...stamp, id: 20, name: "evaluate marker", description: "", owner: "alice", team_id: null, visibility: "private", deployment: "tiny",
  kind: "evaluate", status: "done", attempt: 1, done_batches: 4, total_batches: 4, error: "", params: {}, dataset_id: 2, board_id: 3,
  vector_id: null, probe_id: null, started_at: null, finished_at: "2024-01-01T00:00:00Z",
  result: {
    n: 64, positives: 32, positive_label: "yes", pooling: "last", batch_size: 16,
    probes: [evaluated(1, "marker L2", 2, 0.98), evaluated(2, "marker L1", 1, 0.9)],
    agreement: { correlation: [[1, 0.8], [0.8, 1]], kappa: [[1, 0.62], [0.62, null]] },
  },
};
const board = {
  ...stamp, id: 3, name: "marker board", description: "", owner: "alice", team_id: null, visibility: "private", deployment: "tiny",
  dataset_id: 2, dataset_name: "planted eval", positive_label: "yes", pooling: "last", probe_ids: [1, 2],
  evaluation, latest_job: evaluation,
};
const trace = (example: number) => ({
  example, text: "The cat QQQ", label: "yes", tokens: ["The", " cat", " QQQ"], probes: ["prb_1", "prb_2"],
  scores: [[-1, 0.5, 2], [0.25, -0.5, 1]],
});

function renderBoard() {
  return render(
    <MemoryRouter initialEntries={["/boards/3"]}>
      <Routes>
        <Route path="/boards/:id" element={<BoardPage />} />
      </Routes>
    </MemoryRouter>,
  );
}

describe("BoardPage", () => {
  let current: Record<string, unknown>;
  let shareResponse: () => Response;
  beforeEach(() => {
    current = board;
    shareResponse = () =>
      json(201, { id: 8, kind: "board", target_id: 3, created_at: stamp.created_at, revoked_at: null, token: "shr_b", path: "/app/shared/shr_b" });
    FakeSocket.reset();
    vi.stubGlobal("WebSocket", FakeSocket);
    answer((request, url) => {
      if (url.pathname === "/api/boards/3" && request.method === "GET") return json(200, current);
      if (url.pathname === "/api/probes") return paged([libraryProbe(1, "marker L2", 2), libraryProbe(2, "marker L1", 1), libraryProbe(5, "other", 3)]);
      const traced = /^\/api\/boards\/3\/traces\/(\d+)$/.exec(url.pathname);
      if (traced) return json(200, trace(Number(traced[1])));
      if (url.pathname === "/api/boards/3/share" && request.method === "POST") return shareResponse();
      if (url.pathname === "/api/boards/3/evaluate") {
        const running = { ...evaluation, id: 21, status: "running", done_batches: 1, result: {}, finished_at: null };
        current = { ...board, latest_job: running };
        return json(201, running);
      }
      return undefined;
    });
  });

  it("shows the results: sorted metrics with intervals, agreement, ROC curves and a trace", async () => {
    const user = userEvent.setup();
    renderBoard();
    expect(await screen.findByRole("heading", { name: "marker board", level: 1 })).toBeTruthy();
    const onBoard = screen.getByRole("table", { name: "Probes on the board" });
    await waitFor(() => {
      expect(within(onBoard).getAllByRole("row").map((r) => r.textContent)).toEqual([
        "ProbeSiteHeld-out AUROCActions",
        "marker L2prb_1 · alicelayer 2 · resid_post0.990Remove",
        "marker L1prb_2 · boblayer 1 · resid_post0.800Remove",
      ]);
    });
    // Probes already on the board are not offered again.
    expect(within(screen.getByTestId("probe-picker")).getAllByRole("checkbox").map((c) => c.closest("label")?.textContent)).toEqual([
      "other prb_5 bob · layer 3 · resid_post · held-out AUROC 0.800",
    ]);

    const metrics = screen.getByRole("table", { name: "Probe metrics" });
    const rows = within(metrics).getAllByRole("row").slice(1);
    expect(rows.map((r) => r.querySelector("td[data-metric=auroc]")?.textContent)).toEqual(["0.980[0.940, 1.000]", "0.900[0.860, 1.000]"]);

    const correlation = screen.getByRole("table", { name: "Agreement: Correlation" });
    expect(within(correlation).getAllByRole("cell").map((c) => c.textContent)).toEqual(["", "1.00", "0.80", "0.80", "1.00"]);
    await user.click(screen.getByRole("button", { name: "Cohen's kappa" }));
    const kappa = screen.getByRole("table", { name: "Agreement: Cohen's kappa" });
    expect(within(kappa).getAllByRole("cell").map((c) => c.textContent)).toEqual(["", "1.00", "0.62", "0.62", "—"]);

    expect(screen.getByRole("img", { name: /^ROC curves/ })).toBeTruthy();
    expect(within(screen.getByRole("list", { name: /^Legend: ROC curves/ })).getAllByRole("listitem").map((li) => li.textContent)).toEqual([
      "marker L2 (prb_1, AUROC 0.980)",
      "marker L1 (prb_2, AUROC 0.900)",
    ]);

    // The trace: one cell per token, tinted by the chosen probe.
    const view = await screen.findByTestId("trace");
    const cells = () => [...view.querySelectorAll(".tok")].map((t) => [t.textContent, t.getAttribute("data-score")]);
    expect(cells()).toEqual([["The", "-1"], [" cat", "0.5"], [" QQQ", "2"]]);
    await user.selectOptions(screen.getByLabelText("Colour tokens by"), "1");
    expect(cells()).toEqual([["The", "0.25"], [" cat", "-0.5"], [" QQQ", "1"]]);
    await user.click(screen.getByRole("button", { name: "Next" }));
    await waitFor(() => {
      expect(screen.getByTestId("trace").getAttribute("data-example")).toBe("1");
    });
    expect(requests.some((r) => new URL(r.url).pathname === "/api/boards/3/traces/1")).toBe(true);
  });

  it("shares the board: the new link's URL, shown once", async () => {
    const user = userEvent.setup();
    renderBoard();
    await user.click(await screen.findByRole("button", { name: "Share the board" }));
    const link = await screen.findByLabelText<HTMLInputElement>("Share link to this board");
    expect(link.value).toBe(`${window.location.origin}/app/shared/shr_b`);
    expect(requests.filter((r) => r.method === "POST").map((r) => new URL(r.url).pathname)).toEqual(["/api/boards/3/share"]);
  });

  it("shows why a viewer cannot share the board", async () => {
    shareResponse = () => json(403, { detail: "only the board's owner or its team's editors can share it" });
    const user = userEvent.setup();
    renderBoard();
    await user.click(await screen.findByRole("button", { name: "Share the board" }));
    expect((await screen.findByRole("alert")).textContent).toBe("only the board's owner or its team's editors can share it");
    expect(screen.queryByLabelText("Share link to this board")).toBeNull();
  });

  it("re-runs the evaluation and follows it live", async () => {
    const user = userEvent.setup();
    renderBoard();
    await user.click(await screen.findByRole("button", { name: "Re-run evaluation" }));
    const progress = await screen.findByTestId("evaluation-progress");
    await waitFor(() => {
      expect(progress.getAttribute("data-status")).toBe("running");
    });
    const socket = FakeSocket.latest();
    socket.open();
    // Watched once the board's reload names job 21 as its latest (maybe after the socket opened).
    await waitFor(() => {
      expect(socket.sent).toContainEqual({ type: "watch", job: 21 });
    });
    socket.frame({ type: "job", job: 21, status: "running", attempt: 1, done: 3, total: 4, error: "" });
    await waitFor(() => {
      expect(within(progress).getByRole("progressbar").getAttribute("aria-valuenow")).toBe("75");
    });
    expect(screen.getByRole<HTMLButtonElement>("button", { name: "Re-run evaluation" }).disabled).toBe(true);
    // The previous results stay on screen meanwhile.
    expect(screen.getByRole("table", { name: "Probe metrics" })).toBeTruthy();
  });
});
