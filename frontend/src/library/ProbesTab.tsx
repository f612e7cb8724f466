// The library's linear probes: search and filter, details (site, labels, metrics), upload, delete.
import { useRef, useState } from "react";
import { api, errorMessage, unwrap } from "../api/client";
import type { Schemas } from "../api/client";
import { useResource } from "../api/useResource";
import { Button, Empty, Field, Loading, Notice, Panel } from "../ui/components";
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
  formatValue,
  provenanceRows,
  teamName,
  toFormData,
  useDebounced,
} from "./shared";

type Probe = Schemas["ProbeOut"];
type Point = Schemas["Point"];

const POINTS: readonly Point[] = ["resid_pre", "resid_post", "attn_out", "mlp_out", "mlp_act"];
const isPoint = (value: string): value is Point => (POINTS as readonly string[]).includes(value);

export function ProbesTab({ deployments, teams }: { deployments: Deployment[]; teams: Team[] }) {
  const [q, setQ] = useState("");
  const [deployment, setDeployment] = useState("");
  const query = useDebounced(q.trim());
  const list = useResource(
    () =>
      unwrap(
        api.GET("/api/probes", {
          params: { query: { q: query || undefined, deployment: deployment || undefined, limit: 100 } },
        }),
      ),
    `${query}\n${deployment}`,
  );
  const [selected, setSelected] = useState<number | null>(null);
  const [notice, setNotice] = useState("");
  const items = list.data?.items ?? [];
  const current = items.find((p) => p.id === selected);

  return (
    <>
      <Panel title="Probes">
        <ListControls what="probes" q={q} onQ={setQ} deployments={deployments} deployment={deployment} onDeployment={setDeployment} />
        <Notice>{list.error}</Notice>
        <Notice tone="success">{notice}</Notice>
        {list.loading && !list.data ? <Loading what="probes" /> : null}
        {list.data && items.length === 0 ? (
          <Empty>{query || deployment ? "No probes match." : "No probes yet: upload one below."}</Empty>
        ) : null}
        {items.length > 0 ? (
          <>
            <p className="meta">{countLine(list.data?.count ?? items.length, items.length, "probe")}</p>
            <table aria-label="Probes">
              <thead>
                <tr>
                  <th scope="col">Name</th>
                  <th scope="col">Model</th>
                  <th scope="col">Layer</th>
                  <th scope="col">Point</th>
                  <th scope="col">Labels</th>
                  <th scope="col">Owner</th>
                  <th scope="col">Visibility</th>
                </tr>
              </thead>
              <tbody>
                {items.map((p) => (
                  <tr key={p.id} className={p.id === selected ? "selected" : undefined}>
                    <td>
                      <SelectButton name={p.name} selected={p.id === selected} onSelect={() => { setSelected(p.id); setNotice(""); }} />
                    </td>
                    <td>{p.deployment}</td>
                    <td>{p.layer}</td>
                    <td><code>{p.point}</code></td>
                    <td>{p.label_names.join(", ") || "—"}</td>
                    <td>{p.owner}</td>
                    <td><VisibilityBadge visibility={p.visibility} /></td>
                  </tr>
                ))}
              </tbody>
            </table>
          </>
        ) : null}
      </Panel>
      <div className="grid-2">
        <Panel title="Probe details">
          {current ? (
            <ProbeDetails
              key={current.id}
              probe={current}
              teams={teams}
              onDeleted={(name) => {
                setSelected(null);
                setNotice(`Deleted the probe “${name}”.`);
                list.reload();
              }}
            />
          ) : (
            <Empty>Select a probe to see its details.</Empty>
          )}
        </Panel>
        <UploadProbe
          deployments={deployments}
          teams={teams}
          onUploaded={(probe) => {
            setSelected(probe.id);
            setNotice("");
            list.reload();
          }}
        />
      </div>
    </>
  );
}

function ProbeDetails({ probe: p, teams, onDeleted }: { probe: Probe; teams: Team[]; onDeleted: (name: string) => void }) {
  const metrics = Object.entries(p.metrics);
  return (
    <div>
      <h3>{p.name}</h3>
      {p.description ? <p>{p.description}</p> : null}
      <KeyValueTable
        label="Probe properties"
        rows={[
          ["Public id", <><code>{p.public_id}</code> <span className="meta">(the id recipes use)</span></>],
          ["Model", p.deployment],
          ["Layer", p.layer],
          ["Point", <code>{p.point}</code>],
          ["Width", p.width],
          ["Bias", formatValue(p.bias)],
          ["Label names", p.label_names.join(", ") || "—"],
          ["Content hash", <code>{p.content_hash}</code>],
          ["Owner", p.owner],
          ["Visibility", <VisibilityBadge visibility={p.visibility} />],
          ["Team", teamName(teams, p.team_id)],
          ["Forked from", p.forked_from_id === null ? "—" : `probe #${p.forked_from_id}`],
          ["Created", formatDate(p.created_at)],
          ["Updated", formatDate(p.updated_at)],
          ...provenanceRows(p.provenance),
        ]}
      />
      <h3>Metrics</h3>
      {metrics.length === 0 ? (
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
      <DeleteButton
        what="probe"
        name={p.name}
        remove={() => unwrap(api.DELETE("/api/probes/{probe_id}", { params: { path: { probe_id: p.id } } }))}
        onDeleted={() => { onDeleted(p.name); }}
      />
    </div>
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
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [deployment, setDeployment] = useState("");
  const [layer, setLayer] = useState("");
  const [point, setPoint] = useState<Point>("resid_post");
  const [visibility, setVisibility] = useState<Visibility>("private");
  const [team, setTeam] = useState("");
  const [file, setFile] = useState<File | null>(null);
  const fileInput = useRef<HTMLInputElement>(null);
  const [error, setError] = useState("");
  const [done, setDone] = useState("");
  const [busy, setBusy] = useState(false);
  const chosen = deployment || deployments[0]?.name || "";
  const chosenModel = deployments.find((d) => d.name === chosen);

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
        api.POST("/api/probes", {
          body: {
            deployment: chosen,
            name,
            description,
            layer: Number(layer),
            point,
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
      setDone(`Uploaded the probe “${created.name}”.`);
      onUploaded(created);
    } catch (exc) {
      setError(errorMessage(exc));
    } finally {
      setBusy(false);
    }
  };

  return (
    <Panel title="Upload a probe">
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
        <Field label="Deployment" hint={deployments.length === 0 ? "No models are registered." : undefined}>
          {(id, describedBy) => (
            <select id={id} aria-describedby={describedBy} required value={chosen} onChange={(e) => { setDeployment(e.target.value); }}>
              {deployments.map((d) => (
                <option key={d.id} value={d.name}>{d.name} ({d.num_layers} layers, hidden size {d.hidden_size})</option>
              ))}
            </select>
          )}
        </Field>
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
        <Field label="Description">
          {(id) => <textarea id={id} rows={2} value={description} onChange={(e) => { setDescription(e.target.value); }} />}
        </Field>
        <SharingFields visibility={visibility} onVisibility={setVisibility} team={team} onTeam={setTeam} teams={teams} />
        <FileField
          hint="safetensors (weight, optional bias); pickled files are refused."
          accept=".safetensors"
          inputRef={fileInput}
          onFile={setFile}
        />
        <Button type="submit" variant="primary" disabled={busy || !chosen}>
          Upload probe
        </Button>
      </form>
    </Panel>
  );
}
