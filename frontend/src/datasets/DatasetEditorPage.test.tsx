import { render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { MemoryRouter, Route, Routes } from "react-router";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { answer, json, paged, requests } from "../library/fakeFetch";
import { DatasetEditorPage } from "./DatasetEditorPage";

await vi.hoisted(async () => {
  const { fakeFetch } = await import("../library/fakeFetch");
  vi.stubGlobal("fetch", fakeFetch);
});

const dataset = (id: number, rowCount: number) => ({
  id, name: id === 4 ? "sentiment" : "written", description: "", owner: "alice", team_id: null, visibility: "private",
  created_at: "2024-01-01T00:00:00Z", updated_at: "2024-01-01T00:00:00Z", content_hash: "abc", provenance: {},
  forked_from_id: null, kind: "labelled", row_count: rowCount,
});

const stored = [
  { text: "I love it", label: "pos" },
  { text: "I hate it", label: "neg" },
  { text: "Wonderful", label: "pos" },
];

function renderAt(path: string) {
  return render(
    <MemoryRouter initialEntries={[path]}>
      <Routes>
        <Route path="/datasets/new" element={<DatasetEditorPage />} />
        <Route path="/datasets/:id" element={<DatasetEditorPage />} />
      </Routes>
    </MemoryRouter>,
  );
}

const bodies = async (method: string, path: string) =>
  Promise.all(requests.filter((r) => r.method === method && new URL(r.url).pathname === path).map((r) => r.clone().json() as Promise<unknown>));

describe("DatasetEditorPage", () => {
  let puts = 0;
  beforeEach(() => {
    puts = 0;
    answer(async (request, url) => {
      if (url.pathname === "/api/teams") return paged([]);
      if (url.pathname === "/api/datasets/4" && request.method === "GET") return json(200, dataset(4, 3));
      if (url.pathname === "/api/datasets/4/rows" && request.method === "GET") return json(200, { kind: "labelled", rows: stored, labels: ["neg", "pos"] });
      if (url.pathname === "/api/datasets/4/rows" && request.method === "PUT") {
        puts += 1;
        const body = (await request.clone().json()) as { rows: unknown[] };
        if (puts === 1) {
          return json(400, { detail: "'rows.jsonl': line 4: 'label' is empty", errors: { rows: ["'rows.jsonl': line 4: 'label' is empty"] } });
        }
        return json(200, { kind: "labelled", rows: body.rows, labels: ["neg", "pos"] });
      }
      if (url.pathname === "/api/datasets/rows" && request.method === "POST") return json(201, dataset(9, 2));
      if (url.pathname === "/api/datasets/9") return json(200, dataset(9, 2));
      if (url.pathname === "/api/datasets/9/rows") return json(200, { kind: "labelled", rows: stored.slice(0, 2), labels: ["neg", "pos"] });
      return undefined;
    });
  });

  it("edits rows, catches empty cells before sending, pastes lines and shows the server's row errors", async () => {
    const user = userEvent.setup();
    renderAt("/datasets/4");
    const table = await screen.findByRole("table", { name: "Rows" });
    expect(within(table).getByLabelText<HTMLInputElement>("Row 2 text").value).toBe("I hate it");
    expect(screen.getByTestId("label-counts").textContent).toBe("Labels: pos: 2neg: 1");
    expect(screen.getByRole<HTMLButtonElement>("button", { name: "Save rows" }).disabled).toBe(true);

    // An emptied label: marked at its row, nothing sent.
    await user.clear(screen.getByLabelText("Row 2 label"));
    await user.click(screen.getByRole("button", { name: "Save rows" }));
    expect(screen.getByText("Row 2: The label is empty.")).toBeTruthy();
    expect(screen.getByLabelText("Row 2 label").getAttribute("aria-invalid")).toBe("true");
    expect(screen.getByRole("alert").textContent).toBe("Nothing was saved: fix the rows marked below.");
    expect(requests.some((r) => r.method === "PUT")).toBe(false);
    await user.type(screen.getByLabelText("Row 2 label"), "neg");

    // Lines pasted into a cell fill the rows from there down, adding rows.
    await user.click(screen.getByLabelText("Row 3 text"));
    await user.paste("Great\tpos\nAwful\tneg");
    expect(screen.getByLabelText<HTMLInputElement>("Row 3 text").value).toBe("Great");
    expect(screen.getByLabelText<HTMLInputElement>("Row 4 label").value).toBe("neg");

    // The server refuses a row: its message goes to that row.
    await user.click(screen.getByRole("button", { name: "Save rows" }));
    expect(await screen.findByText("Row 4: 'label' is empty")).toBeTruthy();
    expect(await bodies("PUT", "/api/datasets/4/rows")).toEqual([
      { rows: [stored[0], { text: "I hate it", label: "neg" }, { text: "Great", label: "pos" }, { text: "Awful", label: "neg" }] },
    ]);

    await user.click(screen.getByRole("button", { name: "Save rows" }));
    expect(await screen.findByText("Saved 4 rows.")).toBeTruthy();
    expect(screen.queryByText("Row 4: 'label' is empty")).toBeNull();
    expect(screen.getByRole<HTMLButtonElement>("button", { name: "Save rows" }).disabled).toBe(true);
  });

  it("writes a new dataset from pasted lines and opens it", async () => {
    const user = userEvent.setup();
    renderAt("/datasets/new");
    await user.type(await screen.findByLabelText("Name"), "written");
    await user.click(screen.getByLabelText("Lines to add"));
    await user.paste('text,label\n"Hello, world",pos\nGoodbye,neg\nx,y,z,neg');
    await user.click(screen.getByRole("button", { name: "Add to the rows" }));
    expect(screen.getByText("Added 3 rows (the header line was skipped).")).toBeTruthy();
    expect(screen.getByLabelText<HTMLInputElement>("Row 3 text").value).toBe("x,y,z");
    await user.click(screen.getByRole("button", { name: "Delete row 3" }));
    expect(screen.queryByLabelText("Row 3 text")).toBeNull();

    await user.click(screen.getByRole("button", { name: "Create dataset" }));
    expect(await screen.findByRole("heading", { name: "Edit rows: written" })).toBeTruthy();
    expect(screen.getByText("Created the dataset “written” (2 rows).")).toBeTruthy();
    await waitFor(async () => {
      expect(await bodies("POST", "/api/datasets/rows")).toEqual([
        {
          name: "written", kind: "labelled", description: "", visibility: "private", team: null,
          rows: [{ text: "Hello, world", label: "pos" }, { text: "Goodbye", label: "neg" }],
        },
      ]);
    });
  });
});
