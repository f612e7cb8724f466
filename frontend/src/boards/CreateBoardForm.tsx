// "New board": a labelled evaluation set, its positive label and pooling, and the probes to compare
// (anyone's that you can see). Optionally starts the first evaluation at once.
import { useId, useState } from "react";
import { useNavigate } from "react-router";
import { api, unwrap } from "../api/client";
import { useCreateForm } from "../jobs/createForm";
import { ChoiceField, DatasetField, NameField, PositiveLabelField, useDatasets, useLabels } from "../jobs/pickers";
import type { Deployment, Team } from "../library/shared";
import { DeploymentField } from "../library/shared";
import { SharingFields, sharingBody } from "../library/sharing";
import { Field } from "../ui/components";
import type { FieldErrors } from "../ui/formErrors";
import { fieldError } from "../ui/formErrors";
import { FormPanel } from "../ui/formPanel";
import { ProbePicker } from "./ProbePicker";

const POOLING = [
  ["last", "Last token"],
  ["mean", "Mean over tokens"],
] as const;
type Pooling = (typeof POOLING)[number][0];

const SHOWN = ["name", "deployment", "dataset_id", "positive_label", "pooling", "probe_ids"];

export function CreateBoardForm({ deployments, teams }: { deployments: Deployment[]; teams: Team[] }) {
  const navigate = useNavigate();
  const form = useCreateForm(deployments);
  const { chosen, name, action } = form;
  const [description, setDescription] = useState("");
  const [datasetId, setDatasetId] = useState<number | null>(null);
  const [positive, setPositive] = useState("");
  const [pooling, setPooling] = useState<Pooling>("last");
  const [probeIds, setProbeIds] = useState<number[]>([]);
  const [evaluateNow, setEvaluateNow] = useState(true);
  const datasets = useDatasets("labelled");
  const labels = useLabels(datasetId);
  const errors = action.errors;
  const checkId = useId();

  const submit = () => {
    const problems: FieldErrors = {};
    if (datasetId === null) problems.dataset_id = ["Choose a labelled evaluation set."];
    if (evaluateNow && probeIds.length === 0) problems.probe_ids = ["Choose at least one probe to evaluate."];
    if (form.rejects(problems) || datasetId === null) return;
    void action.run(async () => {
      const board = await unwrap(
        api.POST("/api/boards", {
          body: {
            deployment: chosen,
            name,
            description,
            dataset_id: datasetId,
            positive_label: positive || null,
            pooling,
            probe_ids: probeIds,
            ...sharingBody(form.sharing),
          },
        }),
      );
      if (evaluateNow) {
        // The board exists either way: if the evaluation is refused, its page offers to start it.
        await unwrap(api.POST("/api/boards/{board_id}/evaluate", { params: { path: { board_id: board.id } } })).catch(() => null);
      }
      void navigate(`/boards/${board.id}`);
    });
  };

  return (
    <FormPanel title="New board" action={action} shown={SHOWN} onSubmit={submit} submit="Create board" ready={!!chosen}>
      <NameField value={name} onChange={form.setName} error={fieldError(errors, "name")} />
      <DeploymentField
        deployments={deployments}
        chosen={chosen}
        onChange={(next) => {
          form.setDeployment(next);
          setProbeIds([]);
        }}
      />
      <DatasetField
        label="Evaluation set"
        datasets={datasets}
        kind="labelled"
        value={datasetId}
        onChange={(id) => {
          setDatasetId(id);
          setPositive("");
        }}
        error={fieldError(errors, "dataset_id")}
      />
      <div className="form-row">
        <PositiveLabelField labels={labels} value={positive} onChange={setPositive} error={fieldError(errors, "positive_label")} />
        <ChoiceField
          label="Pooling"
          choices={POOLING}
          value={pooling}
          onChange={setPooling}
          hint="How an example's per-token scores become one."
          error={fieldError(errors, "pooling")}
        />
      </div>
      <ProbePicker deployment={chosen} selected={probeIds} onChange={setProbeIds} legend="Probes to compare" error={fieldError(errors, "probe_ids")} />
      <Field label="Description">
        {(id) => <textarea id={id} rows={2} value={description} onChange={(e) => { setDescription(e.target.value); }} />}
      </Field>
      <SharingFields sharing={form.sharing} teams={teams} />
      <div className="field field-inline">
        <input id={checkId} type="checkbox" checked={evaluateNow} onChange={(e) => { setEvaluateNow(e.target.checked); }} />
        <label htmlFor={checkId}>Evaluate right away</label>
      </div>
    </FormPanel>
  );
}
