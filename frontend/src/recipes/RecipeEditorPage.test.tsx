import { render, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { MemoryRouter, Route, Routes } from "react-router";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { answer, json, paged, requests } from "../library/fakeFetch";
import { RecipeEditorPage } from "./RecipeEditorPage";

await vi.hoisted(async () => {
  const { fakeFetch } = await import("../library/fakeFetch");
  vi.stubGlobal("fetch", fakeFetch);
});

const tiny = {
  id: 1, name: "tiny", engine: "hf", hf_id_or_path: "/tiny", revision: "", model_type: "llama",
  num_layers: 4, hidden_size: 64, mlp_size: 128, vocab_size: 512,
};
const vector = { id: 3, public_id: "vec_3", name: "happy" };

function renderEditor() {
  return render(
    <MemoryRouter initialEntries={["/recipes/new"]}>
      <Routes>
        <Route path="/recipes/new" element={<RecipeEditorPage />} />
        <Route path="/recipes/:id" element={<p>saved</p>} />
      </Routes>
    </MemoryRouter>,
  );
}

const posts = () => requests.filter((r) => r.method === "POST");

describe("RecipeEditorPage", () => {
  beforeEach(() => {
    answer((request, url) => {
      if (url.pathname === "/api/deployments") return paged([tiny]);
      if (url.pathname === "/api/teams") return paged([]);
      if (url.pathname === "/api/vectors") return paged([vector]);
      if (url.pathname === "/api/probes") return paged([]);
      if (url.pathname === "/api/recipes" && request.method === "POST") return json(201, { id: 12 });
      return undefined;
    });
  });

  it("never saves a value that was not typed: every bad field shows its message at once, nothing is sent", async () => {
    const user = userEvent.setup();
    renderEditor();
    await user.type(await screen.findByLabelText("Name"), "mine");
    await user.click(screen.getByRole("button", { name: "Add intervention" }));
    await user.selectOptions(screen.getByLabelText("New intervention"), "ablate");
    await user.click(screen.getByRole("button", { name: "Add intervention" }));

    const steer = screen.getByRole("group", { name: "Intervention 1" });
    const ablate = screen.getByRole("group", { name: "Intervention 2" });
    await within(steer).findByRole("option", { name: "happy (vec_3)" }); // the library has loaded
    await user.selectOptions(within(steer).getByLabelText("Steering vector"), "vec_3");
    await user.clear(within(steer).getByLabelText("Scale")); // a cleared scale
    await user.selectOptions(within(steer).getByLabelText("Positions"), "slice");
    await user.clear(within(steer).getByLabelText("Start")); // an empty slice start
    await user.clear(within(ablate).getByLabelText("Scale"));
    await user.type(within(ablate).getByLabelText("Scale"), "1e400"); // not a finite number
    await user.selectOptions(within(ablate).getByLabelText("Dimensions"), "list"); // empty indices
    await user.clear(within(ablate).getByLabelText("Layer"));
    await user.type(within(ablate).getByLabelText("Layer"), "9"); // out of range for 4 layers

    await user.click(screen.getByRole("button", { name: "Create recipe" }));
    expect(await screen.findByText("5 fields need a valid value before the recipe can be saved: see the messages at the fields.")).toBeTruthy();
    expect(within(steer).getByText("The scale is required: a number from -10000 to 10000.")).toBeTruthy();
    expect(within(steer).getByText("The slice's start is required: a whole number.")).toBeTruthy();
    expect(within(ablate).getByText("The scale must be a number from -10000 to 10000, not “1e400”.")).toBeTruthy();
    expect(within(ablate).getByText(/^Dimension indices: /)).toBeTruthy();
    expect(within(ablate).getByText("The layer must be a whole number from -4 to 3, not 9.")).toBeTruthy();
    expect(posts()).toEqual([]);

    // Fixed field by field, the messages go as the fields become valid; then it saves what was typed.
    await user.type(within(steer).getByLabelText("Scale"), "3");
    expect(within(steer).queryByText(/The scale/)).toBeNull();
    await user.type(within(steer).getByLabelText("Start"), "0");
    await user.clear(within(ablate).getByLabelText("Scale"));
    await user.type(within(ablate).getByLabelText("Scale"), "0.5");
    await user.type(within(ablate).getByLabelText("Dimension indices"), "2, 7");
    await user.clear(within(ablate).getByLabelText("Layer"));
    await user.type(within(ablate).getByLabelText("Layer"), "-1");
    await user.click(screen.getByRole("button", { name: "Create recipe" }));
    expect(await screen.findByText("saved")).toBeTruthy();
    const [post] = posts();
    const body = (await post?.clone().json()) as { spec: { interventions: Record<string, unknown>[] } };
    expect(body.spec.interventions).toEqual([
      { op: "steer", layer: 2, vector: "vec_3", scale: 3, normalize: "unit", positions: { start: 0, stop: null, step: 1 }, point: "resid_post" },
      { op: "ablate", layer: -1, dims: [2, 7], mode: "zero", scale: 0.5, point: "resid_post" },
    ]);
  });
});
