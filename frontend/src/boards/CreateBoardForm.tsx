// "New board": a labelled evaluation set, its positive label and pooling, and the probes to compare
// (anyone's that you can see). Optionally starts the first evaluation at once.
import { useId, useState } from "react";
import { useNavigate } from "react-router";
import { api, unwrap } from "../api/client";
import { ChoiceField, DatasetField, NameField, PositiveLabelField, useDatasets, useLabels } from "../jobs/pickers";
import type { Deployment, Team, Visibility } from "../library/shared";
import { DeploymentField } from "../library/shared";
import { SharingFields } from "../library/UploadForm";
import { Button, Field, Notice, Panel } from "../ui/components";
import type { FieldErrors } from "../ui/formErrors";
import { fieldError, otherErrors, useFieldAction } from "../ui/formErrors";
import { ProbePicker } from "./ProbePicker";

const POOLING = [
  ["last", "Last token"],
  ["mean", "Mean over tokens"],
] as const;
type Pooling = (typeof POOLING)[number][0];

const SHOWN = ["name", "deployment", "dataset_id", "positive_label", "pooling", "probe_ids"];

export function CreateBoardForm({ deployments, teams }: { deployments: Deployment[]; teams: Team[] }) {
  const navigate = useNavigate();
  const [deployment, setDeployment] = useState("");
  const chosen = deployment || deployments[0]?.name || "";
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [datasetId, setDatasetId] = useState<number | null>(null);
  const [positive, setPositive] = useState("");
  const [pooling, setPooling] = useState<Pooling>("last");
  const [probeIds, setProbeIds] = useState<number[]>([]);
  const [evaluateNow, setEvaluateNow] = useState(true);
  const [visibility, setVisibility] = useState<Visibility>("private");
  const [team, setTeam] = useState("");
  const datasets = useDatasets("labelled");
  const labels = useLabels(datasetId);
  const action = useFieldAction();
  const errors = action.errors;
  const checkId = useId();

  const submit = () => {
    const problems: FieldErrors = {};
    if (!name.trim()) problems.name = ["Enter a name."];
    if (datasetId === null) problems.dataset_id = ["Choose a labelled evaluation set."];
    if (evaluateNow && probeIds.length === 0) problems.probe_ids = ["Choose at least one probe to evaluate."];
    if (datasetId === null || Object.keys(problems).length > 0) {
      action.invalid(problems);
      return;
    }
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
            visibility,
            team: team === "" ? null : Number(team),
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
    <Panel title="New board">
      <Notice>{action.error}</Notice>
      {otherErrors(errors, SHOWN).map((m) => <Notice key={m}>{m}</Notice>)}
      <form
        noValidate
        onSubmit={(event) => {
          event.preventDefault();
          submit();
        }}
      >
        <NameField value={name} onChange={setName} error={fieldError(errors, "name")} />
        <DeploymentField
          deployments={deployments}
          chosen={chosen}
          onChange={(next) => {
            setDeployment(next);
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
        <SharingFields visibility={visibility} onVisibility={setVisibility} team={team} onTeam={setTeam} teams={teams} />
        <div className="field field-inline">
          <input id={checkId} type="checkbox" checked={evaluateNow} onChange={(e) => { setEvaluateNow(e.target.checked); }} />
          <label htmlFor={checkId}>Evaluate right away</label>
        </div>
        <Button type="submit" variant="primary" disabled={action.busy || !chosen}>
          Create board
        </Button>
      </form>
    </Panel>
  );
}
