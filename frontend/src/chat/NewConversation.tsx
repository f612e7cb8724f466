// Start a conversation: a model, and optionally a recipe (at its latest or a chosen version); or
// import a run exported from Steerlab.
import { useState } from "react";
import { useNavigate } from "react-router";
import { api, errorMessage, unwrap } from "../api/client";
import { useResource } from "../api/useResource";
import { Button, Field, Loading, Notice, PageHeader, Panel } from "../ui/components";
import { ImportRun } from "./ImportRun";

export function NewConversation({ onCreated }: { onCreated: () => void }) {
  const navigate = useNavigate();
  const deployments = useResource(() => unwrap(api.GET("/api/deployments", { params: { query: { limit: 100 } } })), "d");
  const [deployment, setDeployment] = useState("");
  const chosen = deployment || deployments.data?.items[0]?.name || "";
  const recipes = useResource(
    () => (chosen ? unwrap(api.GET("/api/recipes", { params: { query: { deployment: chosen, limit: 100 } } })) : Promise.resolve(undefined)),
    chosen,
  );
  const [recipe, setRecipe] = useState("");
  const [version, setVersion] = useState("");
  const [title, setTitle] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const recipeRow = recipes.data?.items.find((r) => String(r.id) === recipe);

  const create = async () => {
    setBusy(true);
    setError("");
    try {
      const created = await unwrap(
        api.POST("/api/conversations", {
          body: {
            deployment: chosen,
            title,
            recipe_id: recipe ? Number(recipe) : null,
            version: version ? Number(version) : null,
          },
        }),
      );
      onCreated();
      void navigate(`/chat/${created.id}`);
    } catch (exc) {
      setError(errorMessage(exc));
    } finally {
      setBusy(false);
    }
  };

  if (deployments.loading && !deployments.data) return <Loading what="models" />;
  return (
    <div>
      <PageHeader title="New conversation" />
      <Panel title="Model and recipe">
        <Notice>{deployments.error || error}</Notice>
        <form
          onSubmit={(event) => {
            event.preventDefault();
            void create();
          }}
        >
          <div className="form-row">
            <Field label="Model">
              {(id) => (
                <select id={id} value={chosen} onChange={(e) => { setDeployment(e.target.value); setRecipe(""); setVersion(""); }}>
                  {deployments.data?.items.map((d) => (
                    <option key={d.id} value={d.name}>{d.name} ({d.num_layers} layers, {d.engine})</option>
                  ))}
                </select>
              )}
            </Field>
            <Field label="Recipe" hint="Only recipes for this model are listed.">
              {(id, describedBy) => (
                <select id={id} aria-describedby={describedBy} value={recipe} onChange={(e) => { setRecipe(e.target.value); setVersion(""); }}>
                  <option value="">None (plain chat)</option>
                  {recipes.data?.items.map((r) => (
                    <option key={r.id} value={r.id}>{r.name} ({r.owner}, v{r.latest_version ?? "?"})</option>
                  ))}
                </select>
              )}
            </Field>
            <Field label="Version">
              {(id) => (
                <select id={id} value={version} disabled={!recipeRow} onChange={(e) => { setVersion(e.target.value); }}>
                  <option value="">Latest</option>
                  {Array.from({ length: recipeRow?.latest_version ?? 0 }, (_, i) => i + 1).reverse().map((n) => (
                    <option key={n} value={n}>v{n}</option>
                  ))}
                </select>
              )}
            </Field>
          </div>
          <Field label="Title" hint="Optional: the first message names it otherwise.">
            {(id, describedBy) => (
              <input id={id} type="text" aria-describedby={describedBy} value={title} maxLength={200} onChange={(e) => { setTitle(e.target.value); }} />
            )}
          </Field>
          <Button type="submit" variant="primary" disabled={busy || !chosen}>
            Start the conversation
          </Button>
        </form>
      </Panel>
      <ImportRun onImported={onCreated} />
    </div>
  );
}
