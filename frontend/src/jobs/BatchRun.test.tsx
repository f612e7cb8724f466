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
  updated_at: "2024-01-01T00:00:00Z", content_hash: "abc", provenance: {}, forked_from_id: null, kind: "labelled", row_count: 20,
};
const recipe = {
  id: 12, name: "weather", description: "", owner: "bob", team_id: 1, visibility: "team", created_at: "2024-01-01T00:00:00Z",
  updated_at: "2024-01-01T00:00:00Z", deployment: "tiny", latest_version: 3, forked_from_version_id: null,
};
const queued = {
  id: 9, name: "weather batch", description: "", owner: "alice", team_id: null, visibility: "private", created_at: "2024-01-01T00:00:00Z",
  updated_at: "2024-01-01T00:00:00Z", deployment: "tiny", kind: "batch_run", status: "queued", attempt: 0, done_batches: 0,
  total_batches: 0, error: "", params: { prompts: 20 }, result: {}, dataset_id: 4, board_id: null, vector_id: null, probe_id: null,
  started_at: null, finished_at: null,
};
const done = {
  ...queued, status: "done", attempt: 1, done_batches: 2, total_batches: 2,
  result: { prompts: 20, finish_reasons: { length: 15, stop: 5 }, tokens: 110, mean_tokens: 5.5, engines: [{ engine: "hf", version: "5.0" }] },
};

describe("Batch run form", () => {
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
      if (url.pathname === "/api/recipes") return url.searchParams.get("deployment") === "tiny" ? paged([recipe]) : paged([]);
      if (url.pathname === "/api/jobs" && request.method === "GET") return paged(job ? [job] : []);
      if (url.pathname === "/api/jobs/batch-run") {
        posts += 1;
        if (posts === 1) {
          const message = "temperature must be a number between 0 and 5";
          return json(400, { detail: message, errors: { temperature: [message] } });
        }
        job = queued;
        return json(201, queued);
      }
      if (url.pathname === "/api/jobs/9") return json(200, job);
      return undefined;
    });
  });

  it("starts a batch run with a recipe version and seed, then offers the downloads once it is done", async () => {
    const user = userEvent.setup();
    render(
      <MemoryRouter initialEntries={["/jobs?form=batch"]}>
        <JobsPage />
      </MemoryRouter>,
    );
    const form = await screen.findByRole("region", { name: "Batch run" });
    await within(form).findByRole("option", { name: "planted (20 rows, alice)" });
    expect(within(form).queryByRole("option", { name: /pairs/ })).toBeNull(); // contrastive: not offered
    await user.type(within(form).getByLabelText("Name"), "weather batch");
    await user.selectOptions(within(form).getByLabelText("Dataset"), "4");
    await within(form).findByRole("option", { name: "weather (bob, v3)" });
    await user.selectOptions(within(form).getByLabelText("Recipe"), "12");
    await user.selectOptions(within(form).getByLabelText("Version"), "2");
    const temperature = within(form).getByLabelText("Temperature");
    await user.clear(temperature);
    await user.type(temperature, "9");
    await user.type(within(form).getByLabelText("Seed"), "1234");
    await user.type(within(form).getByLabelText("Stop at"), "\\n\\n"); // typed: two escaped newlines
    await user.click(within(form).getByLabelText(/Keep the recipe's reads/));
    await user.click(within(form).getByRole("button", { name: "Start batch run" }));

    // The server's refusal shows at its field.
    const error = await within(form).findByText("temperature must be a number between 0 and 5", { selector: ".field-error" });
    expect(temperature.getAttribute("aria-describedby")).toContain(error.id);

    await user.clear(temperature);
    await user.type(temperature, "0.5");
    await user.click(within(form).getByRole("button", { name: "Start batch run" }));
    const latest = await screen.findByTestId("latest-job");
    const post = requests.filter((r) => r.method === "POST").at(-1);
    expect(await post?.clone().json()).toEqual({
      deployment: "tiny",
      dataset_id: 4,
      name: "weather batch",
      recipe_id: 12,
      version: 2,
      max_new_tokens: 128,
      temperature: 0.5,
      top_p: 0.95,
      seed: 1234,
      stop: ["\n\n"],
      overrides: [],
      reads: false,
      visibility: "private",
      team: null,
    });
    expect(within(latest).queryByRole("link", { name: "results.jsonl" })).toBeNull(); // not done yet

    // Done: the counts and the two downloads.
    const socket = FakeSocket.latest();
    socket.open();
    await waitFor(() => {
      expect(socket.sent).toContainEqual({ type: "watch", job: 9 });
    });
    job = done;
    socket.frame({ type: "job", job: 9, status: "done", attempt: 1, done: 2, total: 2, error: "" });
    const jsonl = await within(latest).findByRole("link", { name: "results.jsonl" });
    expect(jsonl.getAttribute("href")).toBe("/api/jobs/9/results.jsonl");
    expect(within(latest).getByRole("link", { name: "results.parquet" }).getAttribute("href")).toBe("/api/jobs/9/results.parquet");
    expect(latest.textContent).toContain("20 prompts, 110 tokens generated (mean 5.5 per prompt); finish reasons: length 15, stop 5.");
  });
});
