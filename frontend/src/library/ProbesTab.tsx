// The library's linear probes: search and filter, details (site, labels, metrics), upload, delete.
import { useState } from "react";
import { Link } from "react-router";
import { api, unwrap } from "../api/client";
import type { Schemas } from "../api/client";
import { ProbeMetricsTable } from "../jobs/ProbeMetricsTable";
import { trainedMetrics } from "../jobs/model";
import { Empty, Field } from "../ui/components";
import { ItemDetails, LibraryTab } from "./LibraryTab";
import type { Deployment, Team } from "./shared";
import { DeploymentField, formatValue, toFormData } from "./shared";
import { UploadForm } from "./UploadForm";

type Probe = Schemas["ProbeOut"];
type Point = Schemas["Point"];

const POINTS: readonly Point[] = ["resid_pre", "resid_post", "attn_out", "mlp_out", "mlp_act"];
const isPoint = (value: string): value is Point => (POINTS as readonly string[]).includes(value);

export function ProbesTab({ deployments, teams, selected = null }: { deployments: Deployment[]; teams: Team[]; selected?: number | null }) {
  return (
    <LibraryTab<Probe>
      what="probe"
      initialSelected={selected}
      actions={<Link className="btn btn-small" to="/jobs?form=probe">Train a probe</Link>}
      load={({ q, deployment }) => unwrap(api.GET("/api/probes", { params: { query: { q, deployment, limit: 100 } } }))}
      deployments={deployments}
      columns={[
        ["Model", (p) => p.deployment],
        ["Layer", (p) => p.layer],
        ["Point", (p) => <code>{p.point}</code>],
        ["Labels", (p) => p.label_names.join(", ") || "—"],
      ]}
      details={({ item, onDeleted }) => (item ? <ProbeDetails probe={item} teams={teams} onDeleted={onDeleted} /> : null)}
      upload={(onUploaded) => <UploadProbe deployments={deployments} teams={teams} onUploaded={onUploaded} />}
    />
  );
}

function ProbeDetails({ probe: p, teams, onDeleted }: { probe: Probe; teams: Team[]; onDeleted: (name: string) => void }) {
  const trained = trainedMetrics(p.metrics);
  const metrics = Object.entries(p.metrics);
  return (
    <ItemDetails
      what="probe"
      item={p}
      teams={teams}
      rows={[
        ["Public id", <><code>{p.public_id}</code> <span className="meta">(the id recipes use)</span></>],
        ["Model", p.deployment],
        ["Layer", p.layer],
        ["Point", <code>{p.point}</code>],
        ["Width", p.width],
        ["Bias", formatValue(p.bias)],
        ["Label names", p.label_names.join(", ") || "—"],
      ]}
      remove={() => unwrap(api.DELETE("/api/probes/{probe_id}", { params: { path: { probe_id: p.id } } }))}
      onDeleted={onDeleted}
    >
      <h3>Metrics</h3>
      {trained ? (
        <ProbeMetricsTable metrics={trained} />
      ) : metrics.length === 0 ? (
        <Empty>No metrics recorded.</Empty>
      ) : (
        <table aria-label="Probe metrics">
          <thead>
            <tr>
              <th scope="col">Metric</th>
              <th scope="col">Value</th>
            </tr>
          </thead>
          <tbody>
            {metrics.map(([key, value]) => (
              <tr key={key}>
                <td>{key}</td>
                <td className="mono">{formatValue(value)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </ItemDetails>
  );
}

function UploadProbe({
  deployments,
  teams,
  onUploaded,
}: {
  deployments: Deployment[];
  teams: Team[];
  onUploaded: (probe: Probe) => void;
}) {
  const [deployment, setDeployment] = useState("");
  const [layer, setLayer] = useState("");
  const [point, setPoint] = useState<Point>("resid_post");
  const chosen = deployment || deployments[0]?.name || "";
  const chosenModel = deployments.find((d) => d.name === chosen);

  return (
    <UploadForm
      what="probe"
      teams={teams}
      fileHint="safetensors (weight, optional bias); pickled files are refused."
      accept=".safetensors"
      ready={Boolean(chosen)}
      upload={async (fields, file) => {
        const created = await unwrap(
          api.POST("/api/probes", {
            body: { ...fields, deployment: chosen, layer: Number(layer), point },
            bodySerializer: (body) => toFormData(body, file),
          }),
        );
        setLayer("");
        return created;
      }}
      onUploaded={onUploaded}
    >
      <DeploymentField deployments={deployments} chosen={chosen} onChange={setDeployment} />
      <div className="form-row">
        <Field label="Layer" hint={chosenModel ? `0 to ${chosenModel.num_layers - 1}, or negative from the end.` : undefined}>
          {(id, describedBy) => (
            <input
              id={id}
              type="number"
              required
              step={1}
              aria-describedby={describedBy}
              value={layer}
              onChange={(e) => { setLayer(e.target.value); }}
            />
          )}
        </Field>
        <Field label="Point" hint="Where in the layer the probe reads.">
          {(id, describedBy) => (
            <select
              id={id}
              aria-describedby={describedBy}
              value={point}
              onChange={(e) => {
                if (isPoint(e.target.value)) setPoint(e.target.value);
              }}
            >
              {POINTS.map((value) => (
                <option key={value} value={value}>{value}</option>
              ))}
            </select>
          )}
        </Field>
      </div>
    </UploadForm>
  );
}
