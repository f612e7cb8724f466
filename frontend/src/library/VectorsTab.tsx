// The library's steering vectors: search and filter, details (with the norm per layer), upload, delete.
import { useRef, useState } from "react";
import { api, errorMessage, unwrap } from "../api/client";
import type { Schemas } from "../api/client";
import { useResource } from "../api/useResource";
import { Button, Empty, Field, Loading, Notice, Panel } from "../ui/components";
import { NormsChart, sortedNorms } from "./NormsChart";
import type { Deployment, Team, Visibility } from "./shared";
import {
  DeleteButton,
  FileField,
  KeyValueTable,
  ListControls,
  SelectButton,
  SharingFields,
  VisibilityBadge,
  countLine,
  formatDate,
  provenanceRows,
  teamName,
  toFormData,
  useDebounced,
} from "./shared";

type Vector = Schemas["VectorOut"];

function layersText(layers: number[]): string {
  if (layers.length === 0) return "—";
  if (layers.length <= 6) return layers.join(", ");
  return `${layers.length} layers (${layers[0] ?? ""}–${layers[layers.length - 1] ?? ""})`;
}

export function VectorsTab({ deployments, teams }: { deployments: Deployment[]; teams: Team[] }) {
  const [q, setQ] = useState("");
  const [deployment, setDeployment] = useState("");
  const query = useDebounced(q.trim());
  const list = useResource(
    () =>
      unwrap(
        api.GET("/api/vectors", {
          params: { query: { q: query || undefined, deployment: deployment || undefined, limit: 100 } },
        }),
      ),
    `${query}\n${deployment}`,
  );
  const [selected, setSelected] = useState<number | null>(null);
  const [notice, setNotice] = useState("");
  const items = list.data?.items ?? [];

  return (
    <>
      <Panel title="Vectors">
        <ListControls what="vectors" q={q} onQ={setQ} deployments={deployments} deployment={deployment} onDeployment={setDeployment} />
        <Notice>{list.error}</Notice>
        <Notice tone="success">{notice}</Notice>
        {list.loading && !list.data ? <Loading what="vectors" /> : null}
        {list.data && items.length === 0 ? (
          <Empty>{query || deployment ? "No vectors match." : "No vectors yet: upload one below."}</Empty>
        ) : null}
        {items.length > 0 ? (
          <>
            <p className="meta">{countLine(list.data?.count ?? items.length, items.length, "vector")}</p>
            <table aria-label="Vectors">
              <thead>
                <tr>
                  <th scope="col">Name</th>
                  <th scope="col">Model</th>
                  <th scope="col">Layers</th>
                  <th scope="col">Method</th>
                  <th scope="col">Owner</th>
                  <th scope="col">Visibility</th>
                </tr>
              </thead>
              <tbody>
                {items.map((v) => (
                  <tr key={v.id} className={v.id === selected ? "selected" : undefined}>
                    <td>
                      <SelectButton name={v.name} selected={v.id === selected} onSelect={() => { setSelected(v.id); setNotice(""); }} />
                    </td>
                    <td>{v.deployment}</td>
                    <td>{layersText(v.layers)}</td>
                    <td>{v.method}</td>
                    <td>{v.owner}</td>
                    <td><VisibilityBadge visibility={v.visibility} /></td>
                  </tr>
                ))}
              </tbody>
            </table>
          </>
        ) : null}
      </Panel>
      <div className="grid-2">
        <Panel title="Vector details">
          {selected === null ? (
            <Empty>Select a vector to see its details.</Empty>
          ) : (
            <VectorDetails
              key={selected}
              id={selected}
              teams={teams}
              onDeleted={(name) => {
                setSelected(null);
                setNotice(`Deleted the vector “${name}”.`);
                list.reload();
              }}
            />
          )}
        </Panel>
        <UploadVector
          deployments={deployments}
          teams={teams}
          onUploaded={(vector) => {
            setSelected(vector.id);
            setNotice("");
            list.reload();
          }}
        />
      </div>
    </>
  );
}

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
    <div>
      <Notice>{detail.error}</Notice>
      <h3>{v.name}</h3>
      {v.description ? <p>{v.description}</p> : null}
      <KeyValueTable
        label="Vector properties"
        rows={[
          ["Public id", <><code>{v.public_id}</code> <span className="meta">(the id recipes use)</span></>],
          ["Model", v.deployment],
          ["Method", v.method],
          ["Layers", v.layers.join(", ") || "—"],
          ["Hidden size", v.hidden_size],
          ["Content hash", <code>{v.content_hash}</code>],
          ["Owner", v.owner],
          ["Visibility", <VisibilityBadge visibility={v.visibility} />],
          ["Team", teamName(teams, v.team_id)],
          ["Forked from", v.forked_from_id === null ? "—" : `vector #${v.forked_from_id}`],
          ["Created", formatDate(v.created_at)],
          ["Updated", formatDate(v.updated_at)],
          ...provenanceRows(v.provenance),
        ]}
      />
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
      <DeleteButton
        what="vector"
        name={v.name}
        remove={() => unwrap(api.DELETE("/api/vectors/{vector_id}", { params: { path: { vector_id: id } } }))}
        onDeleted={() => { onDeleted(v.name); }}
      />
    </div>
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
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [deployment, setDeployment] = useState("");
  const [layer, setLayer] = useState("");
  const [visibility, setVisibility] = useState<Visibility>("private");
  const [team, setTeam] = useState("");
  const [file, setFile] = useState<File | null>(null);
  const fileInput = useRef<HTMLInputElement>(null);
  const [error, setError] = useState("");
  const [done, setDone] = useState("");
  const [busy, setBusy] = useState(false);
  const chosen = deployment || deployments[0]?.name || "";

  const upload = async () => {
    if (!file) {
      setError("Choose a file to upload.");
      return;
    }
    setBusy(true);
    setError("");
    setDone("");
    try {
      const created = await unwrap(
        api.POST("/api/vectors", {
          body: {
            deployment: chosen,
            name,
            description,
            layer: layer === "" ? null : Number(layer),
            visibility,
            team: team === "" ? null : Number(team),
            file: file.name,
          },
          bodySerializer: (body) => toFormData(body, file),
        }),
      );
      setName("");
      setDescription("");
      setLayer("");
      setFile(null);
      if (fileInput.current) fileInput.current.value = "";
      setDone(`Uploaded the vector “${created.name}”.`);
      onUploaded(created);
    } catch (exc) {
      setError(errorMessage(exc));
    } finally {
      setBusy(false);
    }
  };

  return (
    <Panel title="Upload a vector">
      <Notice>{error}</Notice>
      <Notice tone="success">{done}</Notice>
      <form
        onSubmit={(event) => {
          event.preventDefault();
          void upload();
        }}
      >
        <Field label="Name">
          {(id) => <input id={id} type="text" required maxLength={100} value={name} onChange={(e) => { setName(e.target.value); }} />}
        </Field>
        <div className="form-row">
          <Field label="Deployment" hint={deployments.length === 0 ? "No models are registered." : undefined}>
            {(id, describedBy) => (
              <select id={id} aria-describedby={describedBy} required value={chosen} onChange={(e) => { setDeployment(e.target.value); }}>
                {deployments.map((d) => (
                  <option key={d.id} value={d.name}>{d.name} ({d.num_layers} layers, hidden size {d.hidden_size})</option>
                ))}
              </select>
            )}
          </Field>
          <Field label="Layer" hint="Optional: for a file holding one direction (e.g. .npy); negative counts from the end.">
            {(id, describedBy) => (
              <input id={id} type="number" step={1} aria-describedby={describedBy} value={layer} onChange={(e) => { setLayer(e.target.value); }} />
            )}
          </Field>
        </div>
        <Field label="Description">
          {(id) => <textarea id={id} rows={2} value={description} onChange={(e) => { setDescription(e.target.value); }} />}
        </Field>
        <SharingFields visibility={visibility} onVisibility={setVisibility} team={team} onTeam={setTeam} teams={teams} />
        <FileField
          hint="safetensors, GGUF or .npy; pickled files are refused."
          accept=".safetensors,.gguf,.npy"
          inputRef={fileInput}
          onFile={setFile}
        />
        <Button type="submit" variant="primary" disabled={busy || !chosen}>
          Upload vector
        </Button>
      </form>
    </Panel>
  );
}
