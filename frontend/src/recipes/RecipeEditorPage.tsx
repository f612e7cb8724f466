// Compose a recipe: its interventions as forms, saved as immutable versions (with diffs between
// them), shared privately, with a team or publicly, and forked.
import { useMemo, useState } from "react";
import { Link, useNavigate, useParams } from "react-router";
import { ApiError, api, unwrap } from "../api/client";
import type { Schemas } from "../api/client";
import { useAction } from "../api/useAction";
import { useResource } from "../api/useResource";
import type { Intervention } from "../chat/protocol";
import { Badge, Button, Empty, Field, Loading, Notice, PageHeader, Panel } from "../ui/components";
import { InterventionForm } from "./InterventionForm";
import type { Choice } from "./InterventionForm";
import { SpecDiff } from "./SpecDiff";
import type { Op } from "./model";
import { OPS, defaultIntervention, draftErrors, errorsFor, generalErrors, prettySpec } from "./model";

type Visibility = Schemas["Visibility"];

export function RecipeEditorPage() {
  const { id } = useParams();
  const recipeId = id ? Number(id) : null;
  const loaded = useResource(async () => {
    const [deployments, teams] = await Promise.all([
      unwrap(api.GET("/api/deployments", { params: { query: { limit: 100 } } })),
      unwrap(api.GET("/api/teams", { params: { query: { limit: 100 } } })),
    ]);
    const recipe =
      recipeId === null ? null : await unwrap(api.GET("/api/recipes/{recipe_id}", { params: { path: { recipe_id: recipeId } } }));
    return { deployments: deployments.items, teams: teams.items, recipe };
  }, String(recipeId));
  if (loaded.error) return <Notice>{loaded.error}</Notice>;
  // The editor's fields start from what was loaded: wait for this recipe's data, not the last one's.
  if (!loaded.data || (loaded.loading && (loaded.data.recipe?.id ?? null) !== recipeId)) {
    return <Loading what="the recipe" />;
  }
  return <Editor key={String(recipeId)} {...loaded.data} onSaved={loaded.reload} />;
}

function Editor({
  deployments,
  teams,
  recipe,
  onSaved,
}: {
  deployments: Schemas["DeploymentOut"][];
  teams: Schemas["TeamOut"][];
  recipe: Schemas["RecipeOut"] | null;
  onSaved: () => void;
}) {
  const navigate = useNavigate();
  const [deployment, setDeployment] = useState(recipe?.deployment ?? deployments[0]?.name ?? "");
  const model = deployments.find((d) => d.name === deployment);
  const numLayers = model?.num_layers ?? 1;
  const [name, setName] = useState(recipe?.name ?? "");
  const [description, setDescription] = useState(recipe?.description ?? "");
  const [visibility, setVisibility] = useState<Visibility>(recipe?.visibility ?? "private");
  const [team, setTeam] = useState<number | null>(recipe?.team_id ?? null);
  // null: not edited since the latest version loaded (the draft is that version).
  const [edited, setDraft] = useState<Intervention[] | null>(null);
  const [serverErrors, setErrors] = useState<Record<string, string[]>>({});
  // Set by a save the draft's own check refused: from then on its problems update as it is edited.
  const [checking, setChecking] = useState(false);
  // A failure's field errors stay (inline, at their fields) until the next failure or a save.
  const { run, busy, done: message, error: problem } = useAction({
    onError: (exc) => { setErrors(exc instanceof ApiError ? exc.fields : {}); },
  });
  const [newOp, setNewOp] = useState<Op>("steer");
  const latest = recipe?.latest_version ?? null;
  const [viewing, setViewing] = useState<number | null>(latest);

  const library = useResource(async () => {
    const [vectors, probes] = await Promise.all([
      unwrap(api.GET("/api/vectors", { params: { query: { deployment, limit: 100 } } })),
      unwrap(api.GET("/api/probes", { params: { query: { deployment, limit: 100 } } })),
    ]);
    return {
      vectors: vectors.items.map((v): Choice => ({ id: v.public_id, label: v.name })),
      probes: probes.items.map((p): Choice => ({ id: p.public_id, label: p.name, layer: p.layer })),
    };
  }, deployment);
  const vectors = library.data?.vectors ?? [];
  const probes = library.data?.probes ?? [];

  // Every version's spec, for the history and its diffs (versions never change once written).
  const versions = useResource(async () => {
    if (!recipe || latest === null) return [];
    const numbers = Array.from({ length: latest }, (_, i) => i + 1);
    return Promise.all(
      numbers.map((number) =>
        unwrap(api.GET("/api/recipes/{recipe_id}/versions/{number}", { params: { path: { recipe_id: recipe.id, number } } })),
      ),
    );
  }, `${recipe?.id ?? "new"}-${latest ?? 0}`);
  const specOf = (v: Schemas["RecipeVersionOut"] | undefined): Intervention[] =>
    (v?.spec as { interventions?: Intervention[] } | undefined)?.interventions ?? [];
  const latestSpec = useMemo(() => specOf(versions.data?.at(-1)), [versions.data]);

  const draft = edited ?? latestSpec;
  const problems = useMemo(() => draftErrors(draft, numLayers), [draft, numLayers]);
  const errors = checking ? problems : serverErrors;
  const problemCount = Object.keys(problems).length;

  const save = () => {
    // Every field that does not hold a valid value is shown at once; nothing is sent.
    if (problemCount > 0) {
      setChecking(true);
      return;
    }
    setChecking(false);
    return run(async () => {
      const spec = { interventions: draft };
      if (!recipe) {
        const created = await unwrap(
          api.POST("/api/recipes", { body: { deployment, name, description, spec, visibility, team } }),
        );
        setErrors({});
        void navigate(`/recipes/${created.id}`);
        return;
      }
      const version = await unwrap(
        api.POST("/api/recipes/{recipe_id}/versions", { params: { path: { recipe_id: recipe.id } }, body: { spec } }),
      );
      setErrors({});
      setDraft(null);
      setViewing(version.number);
      onSaved();
      return `Saved as version ${String(version.number)}.`;
    });
  };

  const share = () =>
    run(async () => {
      if (!recipe) return;
      await unwrap(
        api.PATCH("/api/recipes/{recipe_id}", {
          params: { path: { recipe_id: recipe.id } },
          body: { description, visibility, team: visibility === "team" ? team : null },
        }),
      );
      onSaved();
      return "Sharing and description updated.";
    });

  const fork = () =>
    run(async () => {
      if (!recipe || viewing === null) return;
      const forked = await unwrap(
        api.POST("/api/recipes/{recipe_id}/versions/{number}/fork", {
          params: { path: { recipe_id: recipe.id, number: viewing } },
          body: { name: `${recipe.name} (fork)`, visibility: "private", team: null },
        }),
      );
      void navigate(`/recipes/${forked.id}`);
    });

  const remove = () =>
    run(async () => {
      if (!recipe || !window.confirm(`Delete the recipe “${recipe.name}” and all its versions?`)) return;
      await unwrap(api.DELETE("/api/recipes/{recipe_id}", { params: { path: { recipe_id: recipe.id } } }));
      void navigate("/recipes");
    });

  const update = (index: number, next: Intervention) => { setDraft(draft.map((item, i) => (i === index ? next : item))); };
  const move = (index: number, delta: -1 | 1) => {
    const j = index + delta;
    if (j < 0 || j >= draft.length) return;
    const next = [...draft];
    [next[index], next[j]] = [next[j] as Intervention, next[index] as Intervention];
    setDraft(next);
  };
  const add = () => {
    const ref = newOp === "probe" ? (probes[0]?.id ?? "") : (vectors[0]?.id ?? "");
    setDraft([...draft, defaultIntervention(newOp, Math.floor(numLayers / 2), ref)]);
  };

  const viewed = versions.data?.find((v) => v.number === viewing);
  const previous = versions.data?.find((v) => v.number === (viewing ?? 0) - 1);
  const dirty = prettySpec(draft) !== prettySpec(latestSpec);

  return (
    <>
      <PageHeader title={recipe ? recipe.name : "New recipe"}>
        {recipe ? <Badge tone="info">v{latest ?? "–"}</Badge> : null}
        {recipe ? <Badge>{recipe.visibility}</Badge> : null}
        {recipe ? <span className="meta">by {recipe.owner}</span> : null}
      </PageHeader>
      <Notice tone="success">{message}</Notice>
      <Notice>{problem}</Notice>
      {checking && problemCount > 0 ? (
        <Notice>
          {problemCount === 1 ? "1 field needs" : `${String(problemCount)} fields need`} a valid value before the recipe can be
          saved: see the messages at the fields.
        </Notice>
      ) : null}
      {generalErrors(errors).map((e) => <Notice key={e}>{e}</Notice>)}
      <div className="split">
        <div>
          <Panel title="Details">
            <Field label="Name">
              {(fid) => <input id={fid} type="text" value={name} maxLength={100} disabled={Boolean(recipe)} onChange={(e) => { setName(e.target.value); }} />}
            </Field>
            <Field label="Model" hint={model ? `${model.num_layers} layers, hidden size ${model.hidden_size}` : undefined}>
              {(fid, describedBy) => (
                <select id={fid} aria-describedby={describedBy} value={deployment} disabled={Boolean(recipe)} onChange={(e) => { setDeployment(e.target.value); }}>
                  {deployments.map((d) => <option key={d.id} value={d.name}>{d.name}</option>)}
                </select>
              )}
            </Field>
            <Field label="Description">
              {(fid) => <textarea id={fid} rows={3} value={description} onChange={(e) => { setDescription(e.target.value); }} />}
            </Field>
            <Field label="Visibility" hint="Team: your team can use it; public: everyone.">
              {(fid, describedBy) => (
                <select id={fid} aria-describedby={describedBy} value={visibility} onChange={(e) => { setVisibility(e.target.value as Visibility); }}>
                  <option value="private">private</option>
                  <option value="team">team</option>
                  <option value="public">public</option>
                </select>
              )}
            </Field>
            {visibility === "team" ? (
              <Field label="Team">
                {(fid) => (
                  <select id={fid} value={team ?? ""} onChange={(e) => { setTeam(e.target.value ? Number(e.target.value) : null); }}>
                    <option value="">Choose…</option>
                    {teams.map((t) => <option key={t.id} value={t.id}>{t.name}</option>)}
                  </select>
                )}
              </Field>
            ) : null}
            {recipe ? (
              <div className="form-row">
                <Button onClick={() => void share()} disabled={busy}>Update sharing</Button>
                <Button variant="danger" onClick={() => void remove()} disabled={busy}>Delete recipe</Button>
              </div>
            ) : null}
          </Panel>
          {recipe ? (
            <Panel title="Versions">
              {versions.loading && !versions.data ? <Loading what="versions" /> : null}
              <ul className="list">
                {[...(versions.data ?? [])].reverse().map((v) => (
                  <li key={v.number}>
                    <button type="button" className="btn btn-ghost" aria-pressed={v.number === viewing} onClick={() => { setViewing(v.number); }}>
                      v{v.number} · {v.created_by} · {new Date(v.created_at).toLocaleString()}
                    </button>
                  </li>
                ))}
              </ul>
              {viewed ? (
                <>
                  <h3>v{viewed.number} {previous ? `vs v${previous.number}` : "(first version)"}</h3>
                  <SpecDiff label={`Changes in version ${viewed.number}`} before={previous ? prettySpec(specOf(previous)) : ""} after={prettySpec(specOf(viewed))} />
                  <div className="form-row" style={{ marginTop: 8 }}>
                    <Button small onClick={() => { setDraft(specOf(viewed)); }}>Edit from v{viewed.number}</Button>
                    <Button small onClick={() => void fork()} disabled={busy}>Fork v{viewed.number}</Button>
                  </div>
                </>
              ) : null}
            </Panel>
          ) : null}
        </div>
        <div>
          <Panel
            title="Interventions"
            actions={
              <Button variant="primary" onClick={() => void save()} disabled={busy || draft.length === 0 || (Boolean(recipe) && !dirty)}>
                {recipe ? `Save as version ${(latest ?? 0) + 1}` : "Create recipe"}
              </Button>
            }
          >
            <Notice>{library.error}</Notice>
            {library.data && !vectors.length && !probes.length ? (
              <Notice tone="info">
                The library has no vectors or probes for {deployment} yet: <Link to="/library">upload some</Link>.
              </Notice>
            ) : null}
            {draft.length === 0 ? <Empty>No interventions yet: add one below.</Empty> : null}
            {draft.map((item, index) => (
              <InterventionForm
                key={index}
                index={index}
                value={item}
                numLayers={numLayers}
                vectors={vectors}
                probes={probes}
                errors={errorsFor(errors, index)}
                onChange={(next) => { update(index, next); }}
                onRemove={() => { setDraft(draft.filter((_, i) => i !== index)); }}
                onMove={(delta) => { move(index, delta); }}
              />
            ))}
            <div className="form-row">
              <Field label="New intervention" inline>
                {(fid) => (
                  <select id={fid} value={newOp} onChange={(e) => { setNewOp(e.target.value as Op); }}>
                    {OPS.map((o) => <option key={o.op} value={o.op}>{o.label}</option>)}
                  </select>
                )}
              </Field>
              <Button onClick={add}>Add intervention</Button>
            </div>
          </Panel>
          {recipe && dirty ? (
            <Panel title="Unsaved changes">
              <SpecDiff label="Unsaved changes against the latest version" before={prettySpec(latestSpec)} after={prettySpec(draft)} />
            </Panel>
          ) : null}
        </div>
      </div>
    </>
  );
}
