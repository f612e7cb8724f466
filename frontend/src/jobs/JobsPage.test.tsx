import { render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { MemoryRouter } from "react-router";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { answer, json, paged, requests } from "../library/fakeFetch";
import { FakeSocket } from "./fakeSocket";
import { JobsPage } from "./JobsPage";

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

const deployment = { id: 1, name: "tiny", hf_id_or_path: "x", revision: "main", engine: "hf", model_type: "gpt2", hidden_size: 64, num_layers: 4, mlp_size: 32, vocab_size: 100 };
const dataset = {
  id: 4, name: "planted", description: "", owner: "alice", team_id: null, visibility: "private", created_at: "2024-01-01T00:00:00Z",
  updated_at: "2024-01-01T00:00:00Z", content_hash: "abc", provenance: {}, forked_from_id: null, kind: "labelled", row_count: 64,
};
const metrics = {
  train: { accuracy: 1, auroc: 1, f1: 1, ece: 0.01, n: 52, positives: 26 },
  heldout: { accuracy: 0.92, auroc: 0.975, f1: 0.9, ece: 0.04, n: 12, positives: 6 },
  heldout_intervals: { accuracy: [0.75, 1], auroc: [0.9, 1], f1: [0.7, 1], ece: [0.01, 0.09] },
  n_train: 52,
  n_heldout: 12,
};
const queued = {
  id: 5, name: "marker probe", description: "", owner: "alice", team_id: null, visibility: "private", created_at: "2024-01-01T00:00:00Z",
  updated_at: "2024-01-01T00:00:00Z", deployment: "tiny", kind: "train_probe", status: "queued", attempt: 0, done_batches: 0,
  total_batches: 0, error: "", params: { layer: 2 }, result: {}, dataset_id: 4, board_id: null, vector_id: null, probe_id: null,
  started_at: null, finished_at: null,
};
const done = { ...queued, status: "done", attempt: 1, done_batches: 4, total_batches: 4, probe_id: 11, result: { probe_id: 11, public_id: "prb_11", metrics } };

describe("JobsPage", () => {
  let job: typeof queued | typeof done | null = null;
  beforeEach(() => {
    job = null;
    FakeSocket.reset();
    vi.stubGlobal("WebSocket", FakeSocket);
    let posts = 0;
    answer((request, url) => {
      if (url.pathname === "/api/deployments") return paged([deployment]);
      if (url.pathname === "/api/teams") return paged([]);
      if (url.pathname === "/api/datasets") return paged([dataset, { ...dataset, id: 6, name: "pairs", kind: "contrastive" }]);
      if (url.pathname === "/api/datasets/4/rows") return json(200, { kind: "labelled", rows: [], labels: ["no", "yes"] });
      if (url.pathname === "/api/jobs" && request.method === "GET") return paged(job ? [job] : []);
      if (url.pathname === "/api/jobs/train-probe") {
        posts += 1;
        if (posts === 1) {
          const message = "layer 9 is out of range: tiny has 4 layers (0..3)";
          return json(400, { detail: message, errors: { layer: [message] } });
        }
        job = queued;
        return json(201, queued);
      }
      if (url.pathname === "/api/jobs/5") return json(200, job);
      return undefined;
    });
  });

  it("trains a probe: inline field errors, then live progress over the socket, then the held-out metrics", async () => {
    const user = userEvent.setup();
    render(
      <MemoryRouter initialEntries={["/jobs"]}>
        <JobsPage />
      </MemoryRouter>,
    );
    const form = await screen.findByRole("region", { name: "Train a probe" });
    await within(form).findByRole("option", { name: "planted (64 rows, alice)" });
    expect(within(form).queryByRole("option", { name: /pairs/ })).toBeNull(); // contrastive: not offered
    await user.type(within(form).getByLabelText("Name"), "marker probe");
    await user.selectOptions(within(form).getByLabelText("Dataset"), "4");
    await within(form).findByRole("option", { name: "yes" });
    await user.selectOptions(within(form).getByLabelText("Positive label"), "yes");
    const layer = within(form).getByLabelText("Layer");
    await user.clear(layer);
    await user.type(layer, "9");
    await user.click(within(form).getByRole("button", { name: "Start training" }));

    // The server's message for the layer shows at the layer.
    const error = await within(form).findByText("layer 9 is out of range: tiny has 4 layers (0..3)", { selector: ".field-error" });
    expect(layer.getAttribute("aria-describedby")).toContain(error.id);

    await user.clear(layer);
    await user.type(layer, "2");
    await user.click(within(form).getByRole("button", { name: "Start training" }));
    const latest = await screen.findByTestId("latest-job");
    expect(within(latest).getByTestId("job-progress").textContent).toContain("waiting for a worker");
    const post = requests.filter((r) => r.method === "POST").at(-1);
    expect(await post?.clone().json()).toMatchObject({ deployment: "tiny", dataset_id: 4, name: "marker probe", layer: 2, positive_label: "yes", heldout_fraction: 0.2, l2: 0.001, seed: 0, point: "resid_post", reduce: "last" });

    // The socket watches the job and shows its batches as they complete.
    const socket = FakeSocket.latest();
    socket.open();
    await waitFor(() => {
      expect(socket.sent).toContainEqual({ type: "watch", job: 5 });
    });
    socket.frame({ type: "job", job: 5, status: "running", attempt: 1, done: 1, total: 4, error: "" });
    const bar = await within(latest).findByRole("progressbar", { name: "Progress of marker probe" });
    await waitFor(() => {
      expect(bar.getAttribute("aria-valuenow")).toBe("25");
    });
    expect(within(latest).getByTestId("job-progress").textContent).toContain("1 / 4 batches");

    // A dropped socket reconnects and watches the job again.
    socket.close(1006);
    expect(await screen.findByText("Live progress lost its connection: reconnecting…")).toBeTruthy();
    await waitFor(() => { expect(FakeSocket.instances.length).toBe(2); }, { timeout: 3000 });
    const again = FakeSocket.latest();
    again.open();
    expect(again.sent).toContainEqual({ type: "watch", job: 5 });

    // The end: the job is fetched again, with its result.
    job = done;
    again.frame({ type: "job", job: 5, status: "done", attempt: 1, done: 4, total: 4, error: "" });
    const table = await within(latest).findByRole("table", { name: "Metrics of marker probe" });
    expect(within(table).getAllByRole("row")[1]?.textContent).toBe("AUROC0.975[0.900, 1.000]1.000");
    expect(latest.textContent).toContain("held-out AUROC 0.975 [0.900, 1.000]");
    expect(within(latest).getByRole("link", { name: "Probe prb_11" }).getAttribute("href")).toBe("/library?section=probes&item=11");
    const list = screen.getByRole("table", { name: "Jobs" });
    await waitFor(() => {
      expect(list.querySelector("tr[data-job='5']")?.getAttribute("data-status")).toBe("done");
    });
    await waitFor(() => {
      expect(again.sent).toContainEqual({ type: "unwatch", job: 5 }); // ended: no longer followed
    });
  });
});
