import { render, screen, within } from "@testing-library/react";
import { MemoryRouter } from "react-router";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { App } from "../App";
import { answer, json, requests } from "../library/fakeFetch";
import { describeAdjustment, describeSpec, samplingRows } from "./runFacts";

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

const TOKEN = "shr_abc123";
const when = "2024-01-01T00:00:00Z";

const sharedRun = {
  id: 7, conversation_id: 3, kind: "steered", status: "done", attempt: 1, prompt: "Tell me a story", compare_group: null,
  recipe_version: 2, deployment: "tiny",
  interventions: [
    { op: "steer", layer: 2, point: "resid_post", scale: 4, vector: "vec_calm", name: "calm" },
    { op: "probe", layer: 1, point: "resid_pre", probe: "prb_joy", enabled: false },
  ],
  sampling: { max_new_tokens: 12, temperature: 0.9, top_p: 1, seed: 99 },
  overrides: [{ index: 0, scale: 12 }],
  adjustments: [{ step: 4, index: 0, scale: -30 }, { step: 6, index: 1, enabled: true }],
  tokens: [1, 2, 3], text: "Once upon a time", finish_reason: "length", replay_of: null, queued_at: when, finished_at: when,
  messages: [
    { role: "user", content: "Hi" },
    { role: "assistant", content: "Hello!" },
    { role: "user", content: "Tell me a story" },
  ],
};

const evaluated = (id: number, name: string, auroc: number) => ({
  id, public_id: `prb_${id}`, name, owner: "alice", layer: id, point: "resid_post",
  metrics: { accuracy: 0.9, auroc, f1: 0.8, ece: 0.05, n: 64, positives: 32 },
  intervals: { accuracy: [0.8, 0.95], auroc: [auroc - 0.04, 1], f1: [0.7, 0.9], ece: [0.01, 0.09] },
  roc: { fpr: [0, 0, 1], tpr: [0, 1, 1] },
});
const evaluation = {
  created_at: when, updated_at: when, id: 20, name: "evaluate", description: "", owner: "alice", team_id: null,
  visibility: "private", deployment: "tiny", kind: "evaluate", status: "done", attempt: 1, done_batches: 4, total_batches: 4,
  error: "", params: {}, dataset_id: 2, board_id: 3, vector_id: null, probe_id: null, started_at: null, finished_at: when,
  result: {
    n: 64, positives: 32, positive_label: "yes", pooling: "last", batch_size: 16,
    probes: [evaluated(1, "marker L1", 0.9), evaluated(2, "marker L2", 0.98)],
    agreement: { correlation: [[1, 0.8], [0.8, 1]], kappa: [[1, 0.6], [0.6, 1]] },
  },
};
const board = {
  created_at: when, updated_at: when, id: 3, name: "marker board", description: "Which probe finds the marker?",
  owner: "alice", team_id: null, visibility: "private", deployment: "tiny", dataset_id: 2, dataset_name: "planted eval",
  positive_label: "yes", pooling: "mean", probe_ids: [1, 2], evaluation, latest_job: evaluation,
};

let shared: () => Response;

function renderShared() {
  return render(
    <MemoryRouter initialEntries={[`/shared/${TOKEN}`]}>
      <App />
    </MemoryRouter>,
  );
}

const listed = (name: string) => within(screen.getByRole("list", { name })).getAllByRole("listitem").map((li) => li.textContent);

describe("SharedPage", () => {
  beforeEach(() => {
    answer((request, url) => {
      if (request.method === "GET" && url.pathname === `/api/shared/${TOKEN}`) return shared();
      return undefined;
    });
  });

  it("shows a shared run read-only, without the logged-in shell", async () => {
    shared = () => json(200, { kind: "run", run: sharedRun, board: null });
    renderShared();
    expect(await screen.findByRole("heading", { name: "Shared run 7", level: 1 })).toBeTruthy();
    expect(screen.getByTestId("shared-model").textContent).toBe("tiny");
    expect(listed("Messages")).toEqual(["userHi", "assistantHello!", "userTell me a story"]);
    expect(screen.getByTestId("shared-answer").textContent).toBe("Once upon a time");
    expect(screen.getByTestId("finish-reason").textContent).toBe("Finish reason: reached the token limit");
    expect(listed("Interventions")).toEqual([
      "#0 steer “calm” · layer 2 · resid_post · scale 4 · vector vec_calm",
      "#1 probe · layer 1 · resid_pre · probe prb_joy · disabled",
    ]);
    const sampling = screen.getByRole("table", { name: "Sampling" });
    expect(within(sampling).getAllByRole("row").map((r) => r.textContent)).toEqual([
      "Temperature0.9",
      "Top p1",
      "Seed99",
      "Max new tokens12",
    ]);
    expect(listed("Overrides")).toEqual(["#0 scale 12.00"]);
    expect(listed("Adjustment log")).toEqual(["from token 4: #0 scale -30.00", "from token 6: #1 enabled"]);

    // The anonymous shell: no navigation, no user, no log out, and no /api/me request.
    expect(screen.queryByRole("navigation", { name: "Main" })).toBeNull();
    expect(screen.queryByRole("button", { name: "Log out" })).toBeNull();
    expect(screen.getByRole("link", { name: "Skip to content" }).getAttribute("href")).toBe("#main");
    expect(screen.getByRole("main").id).toBe("main");
    expect(requests.map((r) => `${r.method} ${new URL(r.url).pathname}`)).toEqual([`GET /api/shared/${TOKEN}`]);
  });

  it("shows a shared board with its evaluation's metrics", async () => {
    shared = () => json(200, { kind: "board", run: null, board });
    renderShared();
    expect(await screen.findByRole("heading", { name: "marker board", level: 1 })).toBeTruthy();
    const details = screen.getByRole("table", { name: "Board details" });
    expect(within(details).getAllByRole("row").map((r) => r.textContent)).toEqual([
      "DescriptionWhich probe finds the marker?",
      "Evaluation setplanted eval",
      "Positive labelyes",
      "Poolingmean over tokens",
      "Probes2",
    ]);
    const metrics = screen.getByRole("table", { name: "Probe metrics" });
    const rows = within(metrics).getAllByRole("row").slice(1);
    expect(rows.map((r) => r.getAttribute("data-probe"))).toEqual(["prb_2", "prb_1"]);
    expect(rows.map((r) => r.querySelector("td[data-metric=auroc]")?.textContent)).toEqual(["0.980[0.940, 1.000]", "0.900[0.860, 1.000]"]);
    expect(screen.queryByText("Not evaluated yet.")).toBeNull();
    expect(screen.queryByRole("heading", { name: "Per-token traces" })).toBeNull();
  });

  it("says when a board is not evaluated yet", async () => {
    shared = () => json(200, { kind: "board", board: { ...board, evaluation: null, latest_job: null } });
    renderShared();
    expect(await screen.findByText("Not evaluated yet.")).toBeTruthy();
    expect(screen.queryByRole("table", { name: "Probe metrics" })).toBeNull();
  });

  it("says a revoked or unknown link does not exist", async () => {
    shared = () => json(404, { detail: "Not found: shared page" });
    renderShared();
    expect((await screen.findByRole("alert")).textContent).toBe("This link does not exist or was revoked.");
    expect(screen.getByRole("heading", { name: "Shared link", level: 1 })).toBeTruthy();
  });

  it("shows other failures as they are", async () => {
    shared = () => json(500, { detail: "Server error." });
    renderShared();
    expect((await screen.findByRole("alert")).textContent).toBe("Server error.");
  });
});

describe("run facts", () => {
  it("describes interventions, adjustments and sampling compactly", () => {
    expect(describeSpec({ op: "clamp", layer: 3, value: 2.5 }, 2)).toBe("#2 clamp · layer 3 · value 2.5");
    expect(describeSpec({}, 0)).toBe("#0 ? · layer ?");
    expect(describeAdjustment({ index: 1, enabled: false })).toBe("#1 disabled");
    expect(samplingRows({ temperature: 0, seed: null })).toEqual([
      ["Temperature", "0"],
      ["Top p", "—"],
      ["Seed", "—"],
      ["Max new tokens", "—"],
    ]);
  });
});
