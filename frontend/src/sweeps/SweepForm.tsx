// "New sweep": a steering vector at every (layer, scale) on a set of prompts, with probes read
// along; the result is a grid of coherence costs (KL, perplexity) and probe shifts.
import { useState } from "react";
import { api, unwrap } from "../api/client";
import { useResource } from "../api/useResource";
import { ProbePicker } from "../boards/ProbePicker";
import { useCreateForm } from "../jobs/createForm";
import type { Job } from "../jobs/model";
import { parseIntList, parseLines, parseNumberList } from "../jobs/model";
import { ChoiceField, NameField, NumberField, wholeNumber } from "../jobs/pickers";
import type { Deployment, Team } from "../library/shared";
import { DeploymentField } from "../library/shared";
import { SharingFields, sharingBody } from "../library/sharing";
import { Field, Notice } from "../ui/components";
import type { FieldErrors } from "../ui/formErrors";
import { fieldError } from "../ui/formErrors";
import { FormPanel } from "../ui/formPanel";

const NORMALIZE = [
  ["none", "None"],
  ["unit", "Unit length"],
  ["resid_norm", "Residual norm"],
] as const;
const POSITIONS = [
  ["all", "All tokens"],
  ["prompt", "Prompt tokens"],
  ["generated", "Generated tokens"],
] as const;
type Normalize = (typeof NORMALIZE)[number][0];
type Positions = (typeof POSITIONS)[number][0];

const SHOWN = ["name", "deployment", "vector_id", "layers", "scales", "prompts", "probe_ids", "max_new_tokens", "normalize", "positions", "seed"];

export function SweepForm({
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
  const [vectorId, setVectorId] = useState<number | null>(null);
  const [layerText, setLayerText] = useState<string | null>(null);
  const [scales, setScales] = useState("-8, -4, 0, 4, 8");
  const [prompts, setPrompts] = useState("");
  const [probeIds, setProbeIds] = useState<number[]>([]);
  const [maxTokens, setMaxTokens] = useState("32");
  const [normalize, setNormalize] = useState<Normalize>("none");
  const [positions, setPositions] = useState<Positions>("all");
  const [seed, setSeed] = useState("0");
  const vectors = useResource(
    () => (chosen ? unwrap(api.GET("/api/vectors", { params: { query: { deployment: chosen, limit: 100 } } })) : Promise.resolve({ items: [], count: 0 })),
    chosen,
  );
  const vector = vectors.data?.items.find((v) => v.id === vectorId);
  // The layers default to all of the vector's until edited.
  const layersValue = layerText ?? vector?.layers.join(", ") ?? "";
  const errors = action.errors;

  const submit = () => {
    const problems: FieldErrors = {};
    const layers = parseIntList(layersValue);
    const scaleList = parseNumberList(scales);
    const promptList = parseLines(prompts);
    const tokens = wholeNumber(maxTokens);
    const seedValue = wholeNumber(seed);
    if (vectorId === null) problems.vector_id = ["Choose a steering vector."];
    if (!layers.ok) problems.layers = [layers.error];
    if (!scaleList.ok) problems.scales = [scaleList.error];
    if (promptList.length === 0) problems.prompts = ["Enter at least one prompt, one per line."];
    if (tokens === null) problems.max_new_tokens = ["Enter a whole number."];
    if (seedValue === null) problems.seed = ["Enter a whole number."];
    if (form.rejects(problems) || vectorId === null || !layers.ok || !scaleList.ok || tokens === null || seedValue === null) return;
    void action.run(async () => {
      const job = await unwrap(
        api.POST("/api/jobs/sweep", {
          body: {
            deployment: chosen,
            vector_id: vectorId,
            name,
            layers: layers.value,
            scales: scaleList.value,
            prompts: promptList,
            probe_ids: probeIds,
            max_new_tokens: tokens,
            normalize,
            positions,
            seed: seedValue,
            ...sharingBody(form.sharing),
          },
        }),
      );
      onStarted(job);
      return `Started the sweep “${job.name}”.`;
    });
  };

  const cells = (() => {
    const l = parseIntList(layersValue);
    const s = parseNumberList(scales);
    return l.ok && s.ok ? l.value.length * s.value.length : null;
  })();

  return (
    <FormPanel
      title="New sweep"
      action={action}
      shown={SHOWN}
      notices={<Notice>{vectors.error}</Notice>}
      onSubmit={submit}
      submit="Start the sweep"
      ready={!!chosen}
    >
      <NameField value={name} onChange={form.setName} error={fieldError(errors, "name")} />
      <DeploymentField
        deployments={deployments}
        chosen={chosen}
        onChange={(next) => {
          form.setDeployment(next);
          setVectorId(null);
          setProbeIds([]);
        }}
      />
      <Field
        label="Steering vector"
        hint={vectors.data && vectors.data.items.length === 0 ? "No vectors for this model: build or upload one." : undefined}
        error={fieldError(errors, "vector_id")}
      >
        {(id, describedBy) => (
          <select
            id={id}
            aria-describedby={describedBy}
            required
            value={vectorId ?? ""}
            onChange={(e) => {
              setVectorId(e.target.value === "" ? null : Number(e.target.value));
              setLayerText(null);
            }}
          >
            <option value="">Choose…</option>
            {vectors.data?.items.map((v) => (
              <option key={v.id} value={v.id}>
                {v.name} ({v.public_id}, layers {v.layers.join(", ")})
              </option>
            ))}
          </select>
        )}
      </Field>
      <Field label="Layers" hint="Layers the vector has a direction for; commas and ranges." error={fieldError(errors, "layers")}>
        {(id, describedBy) => (
          <input id={id} type="text" aria-describedby={describedBy} value={layersValue} onChange={(e) => { setLayerText(e.target.value); }} />
        )}
      </Field>
      <Field
        label="Scales"
        hint={`Numbers, e.g. -8, -4, 0, 4, 8.${cells !== null ? ` ${cells} cells (at most 64).` : ""}`}
        error={fieldError(errors, "scales")}
      >
        {(id, describedBy) => (
          <input id={id} type="text" aria-describedby={describedBy} value={scales} onChange={(e) => { setScales(e.target.value); }} />
        )}
      </Field>
      <Field label="Prompts" hint="One per line (at most 64)." error={fieldError(errors, "prompts")}>
        {(id, describedBy) => (
          <textarea id={id} rows={4} aria-describedby={describedBy} value={prompts} onChange={(e) => { setPrompts(e.target.value); }} />
        )}
      </Field>
      <ProbePicker
        deployment={chosen}
        selected={probeIds}
        onChange={setProbeIds}
        legend="Probes to read"
        error={fieldError(errors, "probe_ids")}
      />
      <div className="form-row">
        <NumberField label="Max new tokens" step={1} min={1} max={256} value={maxTokens} onChange={setMaxTokens} error={fieldError(errors, "max_new_tokens")} />
        <NumberField label="Seed" step={1} min={0} value={seed} onChange={setSeed} error={fieldError(errors, "seed")} />
      </div>
      <div className="form-row">
        <ChoiceField label="Normalize" choices={NORMALIZE} value={normalize} onChange={setNormalize} hint="The direction's length before scaling." error={fieldError(errors, "normalize")} />
        <ChoiceField label="Positions" choices={POSITIONS} value={positions} onChange={setPositions} hint="Where the vector is added." error={fieldError(errors, "positions")} />
      </div>
      <SharingFields sharing={form.sharing} teams={teams} />
    </FormPanel>
  );
}
