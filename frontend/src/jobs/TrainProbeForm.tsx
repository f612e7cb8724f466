// "Train probe": a labelled dataset -> activations at one site -> a linear probe with a stratified
// held-out split (its metrics are the held-out ones). Starts a job; `onStarted` gets it.
import { useState } from "react";
import { api, unwrap } from "../api/client";
import type { Deployment, Team } from "../library/shared";
import { DeploymentField } from "../library/shared";
import { SharingFields, sharingBody } from "../library/sharing";
import type { FieldErrors } from "../ui/formErrors";
import { fieldError } from "../ui/formErrors";
import { FormPanel } from "../ui/formPanel";
import { useCreateForm } from "./createForm";
import type { Job } from "./model";
import type { Point, Reduce } from "./pickers";
import {
  ChoiceField,
  DatasetField,
  NameField,
  NumberField,
  POINTS,
  PositiveLabelField,
  REDUCTIONS,
  finiteNumber,
  useDatasets,
  useLabels,
  wholeNumber,
} from "./pickers";

const SHOWN = ["name", "deployment", "dataset_id", "layer", "point", "reduce", "positive_label", "heldout_fraction", "l2", "seed"];

export function TrainProbeForm({
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
  const model = deployments.find((d) => d.name === chosen);
  const [datasetId, setDatasetId] = useState<number | null>(null);
  // null: not edited yet (the middle layer of the chosen model).
  const [layer, setLayer] = useState<string | null>(null);
  const [point, setPoint] = useState<Point>("resid_post");
  const [reduce, setReduce] = useState<Reduce>("last");
  const [positive, setPositive] = useState("");
  const [heldout, setHeldout] = useState("0.2");
  const [l2, setL2] = useState("0.001");
  const [seed, setSeed] = useState("0");
  const datasets = useDatasets("labelled");
  const labels = useLabels(datasetId);
  const errors = action.errors;
  const layers = model?.num_layers ?? 0;
  const layerText = layer ?? String(Math.floor(layers / 2));

  const submit = () => {
    const problems: FieldErrors = {};
    const layerValue = wholeNumber(layerText);
    const heldoutValue = finiteNumber(heldout);
    const l2Value = finiteNumber(l2);
    const seedValue = wholeNumber(seed);
    if (layerValue === null) problems.layer = ["Enter a whole number."];
    if (heldoutValue === null) problems.heldout_fraction = ["Enter a number between 0 and 0.9."];
    if (l2Value === null) problems.l2 = ["Enter a number."];
    if (seedValue === null) problems.seed = ["Enter a whole number."];
    if (datasetId === null) problems.dataset_id = ["Choose a labelled dataset."];
    if (form.rejects(problems) || datasetId === null || layerValue === null || heldoutValue === null || l2Value === null || seedValue === null) return;
    void action.run(async () => {
      const job = await unwrap(
        api.POST("/api/jobs/train-probe", {
          body: {
            deployment: chosen,
            dataset_id: datasetId,
            name,
            layer: layerValue,
            point,
            reduce,
            positive_label: positive || null,
            heldout_fraction: heldoutValue,
            l2: l2Value,
            seed: seedValue,
            ...sharingBody(form.sharing),
          },
        }),
      );
      onStarted(job);
      return `Started training “${job.name}”.`;
    });
  };

  return (
    <FormPanel title="Train a probe" action={action} shown={SHOWN} onSubmit={submit} submit="Start training" ready={!!chosen}>
      <NameField value={name} onChange={form.setName} error={fieldError(errors, "name")} hint="The probe is saved to the library under this name." />
      <DeploymentField deployments={deployments} chosen={chosen} onChange={form.setDeployment} />
      <DatasetField
        datasets={datasets}
        kind="labelled"
        value={datasetId}
        onChange={(id) => {
          setDatasetId(id);
          setPositive("");
        }}
        error={fieldError(errors, "dataset_id")}
      />
      <PositiveLabelField labels={labels} value={positive} onChange={setPositive} error={fieldError(errors, "positive_label")} />
      <div className="form-row">
        <NumberField
          label="Layer"
          step={1}
          value={layerText}
          onChange={setLayer}
          hint={layers ? `0 to ${layers - 1}; negative counts from the end.` : undefined}
          error={fieldError(errors, "layer")}
        />
        <ChoiceField label="Point" choices={POINTS} value={point} onChange={setPoint} hint="Where in the layer." error={fieldError(errors, "point")} />
      </div>
      <div className="form-row">
        <ChoiceField label="Token pooling" choices={REDUCTIONS} value={reduce} onChange={setReduce} error={fieldError(errors, "reduce")} />
        <NumberField label="Held-out fraction" step={0.05} min={0.05} max={0.85} value={heldout} onChange={setHeldout} error={fieldError(errors, "heldout_fraction")} />
      </div>
      <div className="form-row">
        <NumberField label="L2 penalty" value={l2} onChange={setL2} min={0} error={fieldError(errors, "l2")} />
        <NumberField label="Seed" step={1} min={0} value={seed} onChange={setSeed} error={fieldError(errors, "seed")} />
      </div>
      <SharingFields sharing={form.sharing} teams={teams} />
    </FormPanel>
  );
}
