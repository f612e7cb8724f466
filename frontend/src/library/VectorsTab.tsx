// The library's steering vectors: search and filter, details (with the norm per layer), upload, delete.
import { useState } from "react";
import { Link } from "react-router";
import { api, unwrap } from "../api/client";
import type { Schemas } from "../api/client";
import { useResource } from "../api/useResource";
import { Empty, Field, Loading, Notice } from "../ui/components";
import { ItemDetails, LibraryTab } from "./LibraryTab";
import { NormsChart, sortedNorms } from "./NormsChart";
import type { Deployment, Team } from "./shared";
import { DeploymentField, toFormData } from "./shared";
import { UploadForm } from "./UploadForm";

type Vector = Schemas["VectorOut"];

function layersText(layers: number[]): string {
  if (layers.length === 0) return "—";
  if (layers.length <= 6) return layers.join(", ");
  return `${layers.length} layers (${layers[0] ?? ""}–${layers[layers.length - 1] ?? ""})`;
}

export function VectorsTab({ deployments, teams, selected = null }: { deployments: Deployment[]; teams: Team[]; selected?: number | null }) {
  return (
    <LibraryTab<Vector>
      what="vector"
      initialSelected={selected}
      actions={<Link className="btn btn-small" to="/jobs?form=vector">Build a vector</Link>}
      load={({ q, deployment }) => unwrap(api.GET("/api/vectors", { params: { query: { q, deployment, limit: 100 } } }))}
      deployments={deployments}
      columns={[
        ["Model", (v) => v.deployment],
        ["Layers", (v) => layersText(v.layers)],
        ["Method", (v) => v.method],
      ]}
      details={({ id, onDeleted }) => <VectorDetails id={id} teams={teams} onDeleted={onDeleted} />}
      upload={(onUploaded) => <UploadVector deployments={deployments} teams={teams} onUploaded={onUploaded} />}
    />
  );
}

/** Loaded by id: the list's items have no norms. */
function VectorDetails({ id, teams, onDeleted }: { id: number; teams: Team[]; onDeleted: (name: string) => void }) {
  const detail = useResource(
    () => unwrap(api.GET("/api/vectors/{vector_id}", { params: { path: { vector_id: id } } })),
    String(id),
  );
  const v = detail.data;
  if (detail.loading && !v) return <Loading what="the vector" />;
  if (!v) return <Notice>{detail.error}</Notice>;
  const norms = sortedNorms(v.norms);
  return (
    <ItemDetails
      what="vector"
      item={v}
      teams={teams}
      error={detail.error}
      rows={[
        ["Public id", <><code>{v.public_id}</code> <span className="meta">(the id recipes use)</span></>],
        ["Model", v.deployment],
        ["Method", v.method],
        ["Layers", v.layers.join(", ") || "—"],
        ["Hidden size", v.hidden_size],
      ]}
      remove={() => unwrap(api.DELETE("/api/vectors/{vector_id}", { params: { path: { vector_id: id } } }))}
      onDeleted={onDeleted}
    >
      <h3>L2 norm per layer</h3>
      {norms.length === 0 ? (
        <Empty>No norms recorded.</Empty>
      ) : (
        <>
          <NormsChart norms={v.norms} />
          <table aria-label="L2 norm per layer">
            <thead>
              <tr>
                <th scope="col">Layer</th>
                <th scope="col">L2 norm</th>
              </tr>
            </thead>
            <tbody>
              {norms.map(([layer, norm]) => (
                <tr key={layer}>
                  <td>{layer}</td>
                  <td className="mono">{norm.toPrecision(5)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
    </ItemDetails>
  );
}

function UploadVector({
  deployments,
  teams,
  onUploaded,
}: {
  deployments: Deployment[];
  teams: Team[];
  onUploaded: (vector: Vector) => void;
}) {
  const [deployment, setDeployment] = useState("");
  const [layer, setLayer] = useState("");
  const chosen = deployment || deployments[0]?.name || "";

  return (
    <UploadForm
      what="vector"
      teams={teams}
      fileHint="safetensors, GGUF or .npy; pickled files are refused."
      accept=".safetensors,.gguf,.npy"
      ready={Boolean(chosen)}
      upload={async (fields, file) => {
        const created = await unwrap(
          api.POST("/api/vectors", {
            body: { ...fields, deployment: chosen, layer: layer === "" ? null : Number(layer) },
            bodySerializer: (body) => toFormData(body, file),
          }),
        );
        setLayer("");
        return created;
      }}
      onUploaded={onUploaded}
    >
      <div className="form-row">
        <DeploymentField deployments={deployments} chosen={chosen} onChange={setDeployment} />
        <Field label="Layer" hint="Optional: for a file holding one direction (e.g. .npy); negative counts from the end.">
          {(id, describedBy) => (
            <input id={id} type="number" step={1} aria-describedby={describedBy} value={layer} onChange={(e) => { setLayer(e.target.value); }} />
          )}
        </Field>
      </div>
    </UploadForm>
  );
}
