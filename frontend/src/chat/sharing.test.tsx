import { render, screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { MemoryRouter, Route, Routes, useParams } from "react-router";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { answer, json, requests } from "../library/fakeFetch";
import { ImportRun } from "./ImportRun";
import type { RunSummary } from "./protocol";
import { RunCard } from "./RunCard";
import type { RunState } from "./stream";

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

const when = "2024-01-01T00:00:00Z";

function runState(status: string): RunState {
  const summary: RunSummary = {
    id: 7, kind: "chat", status, attempt: 1, compare_group: null, recipe_version: null, interventions: [], sampling: {},
    overrides: [], adjustments: [], text: "Hello", finish_reason: "stop", replay_of: null,
  };
  return {
    id: 7, kind: "chat", status, detail: "", summary, last: [0, 0], attempt: 1, tokens: [], reads: {}, adjustments: [],
    error: "", storedText: "Hello",
  };
}

function renderCard(status: string) {
  return render(
    <MemoryRouter>
      <RunCard run={runState(status)} probe={null} onStop={vi.fn()} onReplay={vi.fn()} />
    </MemoryRouter>,
  );
}

describe("a finished run's Share and Export", () => {
  beforeEach(() => {
    answer((request, url) => {
      if (request.method === "POST" && url.pathname === "/api/runs/7/share") {
        return json(201, { id: 4, kind: "run", target_id: 7, created_at: when, revoked_at: null, token: "shr_xyz", path: "/app/shared/shr_xyz" });
      }
      return undefined;
    });
  });

  it("shows the new link's full URL once, and links the export", async () => {
    const user = userEvent.setup();
    renderCard("done");
    expect(screen.getByRole("link", { name: "Export run 7" }).getAttribute("href")).toBe("/api/runs/7/export");
    expect(screen.queryByLabelText("Share link to this run")).toBeNull();

    await user.click(screen.getByRole("button", { name: "Share run 7" }));
    const link = await screen.findByLabelText<HTMLInputElement>("Share link to this run");
    expect(link.value).toBe(`${window.location.origin}/app/shared/shr_xyz`);
    expect(screen.getByText(/It is shown only once: copy it now\./)).toBeTruthy();
    expect(screen.getByRole("link", { name: "Account" }).getAttribute("href")).toBe("/account");
    expect(requests.map((r) => `${r.method} ${new URL(r.url).pathname}`)).toEqual(["POST /api/runs/7/share"]);
  });

  it("shows the server's reason when sharing fails", async () => {
    answer(() => json(400, { detail: "run 7 is failed: only finished runs can be shared" }));
    const user = userEvent.setup();
    renderCard("stopped");
    await user.click(screen.getByRole("button", { name: "Share run 7" }));
    expect((await screen.findByRole("alert")).textContent).toBe("run 7 is failed: only finished runs can be shared");
    expect(screen.queryByLabelText("Share link to this run")).toBeNull();
  });

  it("offers neither for runs that have not finished well", () => {
    for (const status of ["queued", "running", "failed", "cancelled"]) {
      const { unmount } = renderCard(status);
      expect(screen.queryByRole("button", { name: "Share run 7" })).toBeNull();
      expect(screen.queryByRole("link", { name: "Export run 7" })).toBeNull();
      unmount();
    }
  });
});

function Opened() {
  const { id } = useParams();
  return <h1>Conversation {id}</h1>;
}

describe("ImportRun", () => {
  const onImported = vi.fn();

  function renderImport() {
    return render(
      <MemoryRouter initialEntries={["/chat"]}>
        <Routes>
          <Route path="/chat" element={<ImportRun onImported={onImported} />} />
          <Route path="/chat/:id" element={<Opened />} />
        </Routes>
      </MemoryRouter>,
    );
  }

  beforeEach(() => {
    onImported.mockClear();
  });

  it("posts the file and opens the imported run's conversation", async () => {
    answer((request, url) => {
      if (request.method === "POST" && url.pathname === "/api/runs/import") {
        return json(201, { id: 12, conversation_id: 9, kind: "chat", status: "done" });
      }
      return undefined;
    });
    const user = userEvent.setup();
    renderImport();
    await user.upload(screen.getByLabelText("Run export"), new File(["PK zip"], "steerlab-run-7.zip", { type: "application/zip" }));
    await user.click(screen.getByRole("button", { name: "Import the run" }));
    expect(await screen.findByRole("heading", { name: "Conversation 9" })).toBeTruthy();
    expect(onImported).toHaveBeenCalledTimes(1);

    const post = requests.find((r) => r.method === "POST");
    expect(post && new URL(post.url).pathname).toBe("/api/runs/import");
    const form = post ? await post.clone().formData() : null;
    expect([...(form?.keys() ?? [])]).toEqual(["file"]);
    // The file's content as sent (the test's Request, undici's, names a jsdom File "blob").
    const file = form?.get("file") as File | null | undefined;
    expect(typeof file === "object" && file !== null ? await file.text() : file).toBe("PK zip");
  });

  it("shows the server's message for a bad file", async () => {
    answer(() => json(400, { detail: "not a Steerlab run export: manifest.json is missing" }));
    const user = userEvent.setup();
    renderImport();
    await user.upload(screen.getByLabelText("Run export"), new File(["junk"], "junk.zip"));
    await user.click(screen.getByRole("button", { name: "Import the run" }));
    expect((await screen.findByRole("alert")).textContent).toBe("not a Steerlab run export: manifest.json is missing");
    expect(onImported).not.toHaveBeenCalled();
    expect(screen.getByRole("heading", { name: "Import a run" })).toBeTruthy();
  });

  it("asks for a file before posting", async () => {
    answer(() => undefined);
    const user = userEvent.setup();
    renderImport();
    await user.click(screen.getByRole("button", { name: "Import the run" }));
    await waitFor(() => {
      expect(screen.getByRole("alert").textContent).toBe("Choose a run export (.zip) to import.");
    });
    expect(requests).toEqual([]);
  });
});
