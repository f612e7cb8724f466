// "Build vector": contrastive pairs -> activations of both sides at the chosen layers -> a steering
// vector (mean difference or PCA). Starts a job; `onStarted` gets it.
import { useState } from "react";
import { api, unwrap } from "../api/client";
import type { Deployment, Team } from "../library/shared";
import { DeploymentField } from "../library/shared";
import { SharingFields, sharingBody } from "../library/sharing";
import { Button, Field } from "../ui/components";
import type { FieldErrors } from "../ui/formErrors";
import { fieldError } from "../ui/formErrors";
import { FormPanel } from "../ui/formPanel";
import { useCreateForm } from "./createForm";
import type { Job } from "./model";
import { parseIntList } from "./model";
import type { Reduce } from "./pickers";
import { ChoiceField, DatasetField, NameField, REDUCTIONS, useDatasets } from "./pickers";

const METHODS = [
  ["mean_diff", "Mean difference"],
  ["pca_diff", "PCA of the differences"],
  ["pca_center", "PCA of the centred activations"],
] as const;
type Method = (typeof METHODS)[number][0];

const SHOWN = ["name", "deployment", "dataset_id", "layers", "method", "reduce"];

export function BuildVectorForm({
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
  const layers = deployments.find((d) => d.name === chosen)?.num_layers ?? 0;
  const [datasetId, setDatasetId] = useState<number | null>(null);
  const [layerText, setLayerText] = useState("");
  const [method, setMethod] = useState<Method>("mean_diff");
  const [reduce, setReduce] = useState<Reduce>("last");
  const datasets = useDatasets("contrastive");
  const errors = action.errors;

  const submit = () => {
    const problems: FieldErrors = {};
    const parsed = parseIntList(layerText);
    if (!parsed.ok) problems.layers = [parsed.error];
    if (datasetId === null) problems.dataset_id = ["Choose a contrastive dataset."];
    if (form.rejects(problems) || !parsed.ok || datasetId === null) return;
    void action.run(async () => {
      const job = await unwrap(
        api.POST("/api/jobs/build-vector", {
          body: {
            deployment: chosen,
            dataset_id: datasetId,
            name,
            layers: parsed.value,
            method,
            reduce,
            ...sharingBody(form.sharing),
          },
        }),
      );
      onStarted(job);
      return `Started building “${job.name}”.`;
    });
  };

  return (
    <FormPanel title="Build a steering vector" action={action} shown={SHOWN} onSubmit={submit} submit="Start building" ready={!!chosen}>
      <NameField value={name} onChange={form.setName} error={fieldError(errors, "name")} hint="The vector is saved to the library under this name." />
      <DeploymentField deployments={deployments} chosen={chosen} onChange={form.setDeployment} />
      <DatasetField datasets={datasets} kind="contrastive" value={datasetId} onChange={setDatasetId} error={fieldError(errors, "dataset_id")} />
      <Field
        label="Layers"
        hint={layers ? `Commas and ranges, e.g. 1, 3-5 (0 to ${layers - 1}).` : "Commas and ranges, e.g. 1, 3-5."}
        error={fieldError(errors, "layers")}
      >
        {(id, describedBy) => (
          <div className="form-row">
            <input
              id={id}
              type="text"
              required
              aria-describedby={describedBy}
              value={layerText}
              onChange={(e) => { setLayerText(e.target.value); }}
              style={{ flex: 1 }}
            />
            <Button small disabled={!layers} onClick={() => { setLayerText(`0-${layers - 1}`); }}>
              All layers
            </Button>
          </div>
        )}
      </Field>
      <div className="form-row">
        <ChoiceField label="Method" choices={METHODS} value={method} onChange={setMethod} error={fieldError(errors, "method")} />
        <ChoiceField label="Token pooling" choices={REDUCTIONS} value={reduce} onChange={setReduce} error={fieldError(errors, "reduce")} />
      </div>
      <SharingFields sharing={form.sharing} teams={teams} />
    </FormPanel>
  );
}
