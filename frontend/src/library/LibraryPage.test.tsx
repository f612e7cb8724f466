import { render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { MemoryRouter } from "react-router";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { answer, json, paged, requests } from "./fakeFetch";
import { toFormData } from "./shared";
import { LibraryPage } from "./LibraryPage";

await vi.hoisted(async () => {
  const { fakeFetch } = await import("./fakeFetch");
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

const deployment = { id: 1, name: "tiny", hf_id_or_path: "x", revision: "main", engine: "hf", model_type: "gpt2", hidden_size: 8, num_layers: 4, mlp_size: 32, vocab_size: 100 };
const vector = {
  id: 7, name: "honesty", description: "be honest", owner: "alice", team_id: null, visibility: "private",
  created_at: "2024-01-01T00:00:00Z", updated_at: "2024-01-01T00:00:00Z", public_id: "vec_abc", deployment: "tiny",
  method: "upload", layers: [1, 2], hidden_size: 8, content_hash: "deadbeef", provenance: { source: "upload" }, forked_from_id: null,
};

function renderPage(path = "/library") {
  return render(
    <MemoryRouter initialEntries={[path]}>
      <LibraryPage />
    </MemoryRouter>,
  );
}

describe("LibraryPage", () => {
  beforeEach(() => {
    answer((request, url) => {
      if (url.pathname === "/api/deployments") return paged([deployment]);
      if (url.pathname === "/api/teams") return paged([]);
      if (url.pathname === "/api/vectors" && request.method === "GET") return paged([vector]);
      if (url.pathname === "/api/vectors" && request.method === "POST") return json(400, { detail: "Pickled files are refused." });
      if (url.pathname === "/api/vectors/7" && request.method === "GET") return json(200, { ...vector, norms: { "2": 1.5, "1": 0.5 } });
      if (url.pathname === "/api/vectors/7" && request.method === "DELETE") return json(403, { detail: "Only the owner can delete this." });
      if (url.pathname === "/api/probes") return paged([]);
      return undefined;
    });
  });

  it("lists vectors, searches, shows details with norms and the server's refusals", async () => {
    const user = userEvent.setup();
    renderPage();
    expect(screen.getByRole("heading", { name: "Vectors" })).toBeTruthy();
    await user.click(await screen.findByRole("button", { name: "honesty" }));
    expect(await screen.findByText("vec_abc")).toBeTruthy();
    const norms = screen.getByRole("table", { name: "L2 norm per layer" });
    expect(within(norms).getAllByRole("row").map((row) => row.textContent)).toEqual(["LayerL2 norm", "10.50000", "21.5000"]);

    await user.type(screen.getByLabelText("Search vectors"), "hon");
    await waitFor(() => {
      expect(requests.some((r) => new URL(r.url).searchParams.get("q") === "hon")).toBe(true);
    });

    vi.spyOn(window, "confirm").mockReturnValue(true);
    await user.click(screen.getByRole("button", { name: "Delete" }));
    expect((await screen.findByRole("alert")).textContent).toContain("Only the owner can delete this.");

    await user.type(screen.getByLabelText("Name"), "bad");
    await user.upload(screen.getByLabelText("File"), new File(["x"], "bad.npy"));
    await user.click(screen.getByRole("button", { name: "Upload vector" }));
    expect(await screen.findByText("Pickled files are refused.")).toBeTruthy();
    const post = requests.find((r) => r.method === "POST");
    expect(post && new URL(post.url).pathname).toBe("/api/vectors");
  });

  it("switches sections with pressed buttons", async () => {
    const user = userEvent.setup();
    renderPage();
    await user.click(screen.getByRole("button", { name: "Probes" }));
    expect(screen.getByRole("button", { name: "Probes" }).getAttribute("aria-pressed")).toBe("true");
    expect(screen.getByRole("heading", { name: "Probes" })).toBeTruthy();
    expect(await screen.findByText("No probes yet: upload one below.")).toBeTruthy();
  });
});

describe("toFormData", () => {
  it("leaves out empty fields and sends the file itself", () => {
    const file = new File(["abc"], "v.npy");
    const form = toFormData({ name: "v", layer: null, team: "", description: "", file: "v.npy", deployment: "tiny" }, file);
    expect([...form.keys()]).toEqual(["name", "deployment", "file"]);
    expect(form.get("file")).toBeInstanceOf(File);
  });
});
