// "Batch run": a recipe (or none) applied to every prompt of a labelled dataset, each prompt a
// one-message chat turn; the results download as JSON Lines and Parquet once the job is done.
import { useId, useState } from "react";
import { api, unwrap } from "../api/client";
import { useResource } from "../api/useResource";
import type { Deployment, Team } from "../library/shared";
import { DeploymentField } from "../library/shared";
import { SharingFields, sharingBody } from "../library/sharing";
import { typedStop } from "../chat/protocol";
import { Field } from "../ui/components";
import type { FieldErrors } from "../ui/formErrors";
import { fieldError } from "../ui/formErrors";
import { FormPanel } from "../ui/formPanel";
import { useCreateForm } from "./createForm";
import type { Job } from "./model";
import { DatasetField, NameField, NumberField, finiteNumber, useDatasets, wholeNumber } from "./pickers";

const SHOWN = ["name", "deployment", "dataset_id", "recipe_id", "version", "max_new_tokens", "temperature", "top_p", "seed", "stop", "reads"];

export function BatchRunForm({
  deployments,
  teams,
  onStarted,
}: {
  deployments: Deployment[];
  teams: Team[];
  onStarted: (job: Job) => void;
}) {
  const form = useCreateForm(deployments);
  const { chosen, name, action } = form;
  const [datasetId, setDatasetId] = useState<number | null>(null);
  const [recipe, setRecipe] = useState("");
  const [version, setVersion] = useState("");
  const [maxTokens, setMaxTokens] = useState("128");
  const [temperature, setTemperature] = useState("0.7");
  const [topP, setTopP] = useState("0.95");
  const [seed, setSeed] = useState("");
  const [stopAt, setStopAt] = useState("");
  const [reads, setReads] = useState(true);
  const readsId = useId();
  const datasets = useDatasets("labelled");
  const recipes = useResource(
    () => (chosen ? unwrap(api.GET("/api/recipes", { params: { query: { deployment: chosen, limit: 100 } } })) : Promise.resolve(undefined)),
    chosen,
  );
  const recipeRow = recipes.data?.items.find((r) => String(r.id) === recipe);
  const errors = action.errors;

  const submit = () => {
    const problems: FieldErrors = {};
    const tokens = wholeNumber(maxTokens);
    const temp = finiteNumber(temperature);
    const nucleus = finiteNumber(topP);
    const seedValue = seed.trim() === "" ? null : wholeNumber(seed);
    if (datasetId === null) problems.dataset_id = ["Choose a labelled dataset."];
    if (tokens === null) problems.max_new_tokens = ["Enter a whole number."];
    if (temp === null) problems.temperature = ["Enter a number between 0 and 5."];
    if (nucleus === null) problems.top_p = ["Enter a number in (0, 1]."];
    if (seed.trim() !== "" && seedValue === null) problems.seed = ["Enter a whole number, or leave it empty."];
    if (form.rejects(problems) || datasetId === null || tokens === null || temp === null || nucleus === null) return;
    void action.run(async () => {
      const job = await unwrap(
        api.POST("/api/jobs/batch-run", {
          body: {
            deployment: chosen,
            dataset_id: datasetId,
            name,
            recipe_id: recipe ? Number(recipe) : null,
            version: version ? Number(version) : null,
            max_new_tokens: tokens,
            temperature: temp,
            top_p: nucleus,
            seed: seedValue,
            stop: stopAt ? [typedStop(stopAt)] : [],
            overrides: [], // a turn's slider positions: the API takes them; this form has none
            reads,
            ...sharingBody(form.sharing),
          },
        }),
      );
      onStarted(job);
      return `Started the batch run “${job.name}”.`;
    });
  };

  return (
    <FormPanel title="Batch run" action={action} shown={SHOWN} onSubmit={submit} submit="Start batch run" ready={!!chosen}>
      <NameField value={name} onChange={form.setName} error={fieldError(errors, "name")} hint="The job's name." />
      <DeploymentField
        deployments={deployments}
        chosen={chosen}
        onChange={(next) => {
          form.setDeployment(next);
          setRecipe("");
          setVersion("");
        }}
      />
      <DatasetField
        datasets={datasets}
        kind="labelled"
        value={datasetId}
        onChange={setDatasetId}
        error={fieldError(errors, "dataset_id")}
        hint="Each row's text is a prompt (one user message); its label is kept with the result."
      />
      <div className="form-row">
        <Field label="Recipe" hint={recipes.error || "Only recipes for this model are listed."} error={fieldError(errors, "recipe_id")}>
          {(id, describedBy) => (
            <select id={id} aria-describedby={describedBy} value={recipe} onChange={(e) => { setRecipe(e.target.value); setVersion(""); }}>
              <option value="">None (the plain model)</option>
              {recipes.data?.items.map((r) => (
                <option key={r.id} value={r.id}>{r.name} ({r.owner}, v{r.latest_version ?? "?"})</option>
              ))}
            </select>
          )}
        </Field>
        <Field label="Version" error={fieldError(errors, "version")}>
          {(id, describedBy) => (
            <select id={id} aria-describedby={describedBy} value={version} disabled={!recipeRow} onChange={(e) => { setVersion(e.target.value); }}>
              <option value="">Latest</option>
              {Array.from({ length: recipeRow?.latest_version ?? 0 }, (_, i) => i + 1).reverse().map((n) => (
                <option key={n} value={n}>v{n}</option>
              ))}
            </select>
          )}
        </Field>
      </div>
      <div className="form-row">
        <NumberField label="Max new tokens" step={1} min={1} value={maxTokens} onChange={setMaxTokens} error={fieldError(errors, "max_new_tokens")} />
        <NumberField label="Temperature" step={0.1} min={0} max={5} value={temperature} onChange={setTemperature} hint="0 is greedy." error={fieldError(errors, "temperature")} />
        <NumberField label="Top-p" step={0.05} min={0.05} max={1} value={topP} onChange={setTopP} error={fieldError(errors, "top_p")} />
      </div>
      <Field label="Seed" hint="Row i is sampled with seed + i, as a chat turn with that seed. Empty: a random seed." error={fieldError(errors, "seed")}>
        {(id, describedBy) => (
          <input id={id} type="number" step={1} min={0} aria-describedby={describedBy} value={seed} onChange={(e) => { setSeed(e.target.value); }} />
        )}
      </Field>
      <Field label="Stop at" hint="Each answer ends before this text, as a chat turn's; \n is a newline. Empty: none." error={fieldError(errors, "stop")}>
        {(id, describedBy) => (
          <input id={id} type="text" maxLength={64} aria-describedby={describedBy} value={stopAt} onChange={(e) => { setStopAt(e.target.value); }} />
        )}
      </Field>
      <div className="field field-inline">
        <input id={readsId} type="checkbox" checked={reads} onChange={(e) => { setReads(e.target.checked); }} />
        <label htmlFor={readsId}>Keep the recipe's reads (per-token probe scores and logit lens)</label>
      </div>
      <SharingFields sharing={form.sharing} teams={teams} />
    </FormPanel>
  );
}
