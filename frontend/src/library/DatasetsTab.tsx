// The library's datasets (labelled prompts or contrastive pairs): search, details, upload, delete.
import { useRef, useState } from "react";
import { api, errorMessage, unwrap } from "../api/client";
import type { Schemas } from "../api/client";
import { useResource } from "../api/useResource";
import { Badge, Button, Empty, Field, Loading, Notice, Panel } from "../ui/components";
import type { Team, Visibility } from "./shared";
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

type Dataset = Schemas["DatasetOut"];
type Kind = Schemas["DatasetKind"];

const KINDS: readonly Kind[] = ["labelled", "contrastive"];
const isKind = (value: string): value is Kind => (KINDS as readonly string[]).includes(value);

export function DatasetsTab({ teams }: { teams: Team[] }) {
  const [q, setQ] = useState("");
  const query = useDebounced(q.trim());
  const list = useResource(
    () => unwrap(api.GET("/api/datasets", { params: { query: { q: query || undefined, limit: 100 } } })),
    query,
  );
  const [selected, setSelected] = useState<number | null>(null);
  const [notice, setNotice] = useState("");
  const items = list.data?.items ?? [];
  const current = items.find((d) => d.id === selected);

  return (
    <>
      <Panel title="Datasets">
        <ListControls what="datasets" q={q} onQ={setQ} />
        <Notice>{list.error}</Notice>
        <Notice tone="success">{notice}</Notice>
        {list.loading && !list.data ? <Loading what="datasets" /> : null}
        {list.data && items.length === 0 ? (
          <Empty>{query ? "No datasets match." : "No datasets yet: upload one below."}</Empty>
        ) : null}
        {items.length > 0 ? (
          <>
            <p className="meta">{countLine(list.data?.count ?? items.length, items.length, "dataset")}</p>
            <table aria-label="Datasets">
              <thead>
                <tr>
                  <th scope="col">Name</th>
                  <th scope="col">Kind</th>
                  <th scope="col">Rows</th>
                  <th scope="col">Owner</th>
                  <th scope="col">Visibility</th>
                </tr>
              </thead>
              <tbody>
                {items.map((d) => (
                  <tr key={d.id} className={d.id === selected ? "selected" : undefined}>
                    <td>
                      <SelectButton name={d.name} selected={d.id === selected} onSelect={() => { setSelected(d.id); setNotice(""); }} />
                    </td>
                    <td><Badge>{d.kind}</Badge></td>
                    <td>{d.row_count}</td>
                    <td>{d.owner}</td>
                    <td><VisibilityBadge visibility={d.visibility} /></td>
                  </tr>
                ))}
              </tbody>
            </table>
          </>
        ) : null}
      </Panel>
      <div className="grid-2">
        <Panel title="Dataset details">
          {current ? (
            <DatasetDetails
              key={current.id}
              dataset={current}
              teams={teams}
              onDeleted={(name) => {
                setSelected(null);
                setNotice(`Deleted the dataset “${name}”.`);
                list.reload();
              }}
            />
          ) : (
            <Empty>Select a dataset to see its details.</Empty>
          )}
        </Panel>
        <UploadDataset
          teams={teams}
          onUploaded={(dataset) => {
            setSelected(dataset.id);
            setNotice("");
            list.reload();
          }}
        />
      </div>
    </>
  );
}

function DatasetDetails({ dataset: d, teams, onDeleted }: { dataset: Dataset; teams: Team[]; onDeleted: (name: string) => void }) {
  return (
    <div>
      <h3>{d.name}</h3>
      {d.description ? <p>{d.description}</p> : null}
      <KeyValueTable
        label="Dataset properties"
        rows={[
          ["Kind", d.kind],
          ["Rows", d.row_count],
          ["Content hash", <code>{d.content_hash}</code>],
          ["Owner", d.owner],
          ["Visibility", <VisibilityBadge visibility={d.visibility} />],
          ["Team", teamName(teams, d.team_id)],
          ["Forked from", d.forked_from_id === null ? "—" : `dataset #${d.forked_from_id}`],
          ["Created", formatDate(d.created_at)],
          ["Updated", formatDate(d.updated_at)],
          ...provenanceRows(d.provenance),
        ]}
      />
      <DeleteButton
        what="dataset"
        name={d.name}
        remove={() => unwrap(api.DELETE("/api/datasets/{dataset_id}", { params: { path: { dataset_id: d.id } } }))}
        onDeleted={() => { onDeleted(d.name); }}
      />
    </div>
  );
}

function UploadDataset({ teams, onUploaded }: { teams: Team[]; onUploaded: (dataset: Dataset) => void }) {
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [kind, setKind] = useState<Kind | "">("");
  const [visibility, setVisibility] = useState<Visibility>("private");
  const [team, setTeam] = useState("");
  const [file, setFile] = useState<File | null>(null);
  const fileInput = useRef<HTMLInputElement>(null);
  const [error, setError] = useState("");
  const [done, setDone] = useState("");
  const [busy, setBusy] = useState(false);

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
        api.POST("/api/datasets", {
          body: {
            name,
            description,
            kind: kind === "" ? null : kind,
            visibility,
            team: team === "" ? null : Number(team),
            file: file.name,
          },
          bodySerializer: (body) => toFormData(body, file),
        }),
      );
      setName("");
      setDescription("");
      setFile(null);
      if (fileInput.current) fileInput.current.value = "";
      setDone(`Uploaded the dataset “${created.name}” (${created.row_count} rows).`);
      onUploaded(created);
    } catch (exc) {
      setError(errorMessage(exc));
    } finally {
      setBusy(false);
    }
  };

  return (
    <Panel title="Upload a dataset">
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
        <Field label="Kind" hint="Labelled prompts (text, label) or contrastive pairs (positive, negative).">
          {(id, describedBy) => (
            <select
              id={id}
              aria-describedby={describedBy}
              value={kind}
              onChange={(e) => {
                const value = e.target.value;
                setKind(isKind(value) ? value : "");
              }}
            >
              <option value="">Detect from the columns</option>
              <option value="labelled">Labelled</option>
              <option value="contrastive">Contrastive</option>
            </select>
          )}
        </Field>
        <Field label="Description">
          {(id) => <textarea id={id} rows={2} value={description} onChange={(e) => { setDescription(e.target.value); }} />}
        </Field>
        <SharingFields visibility={visibility} onVisibility={setVisibility} team={team} onTeam={setTeam} teams={teams} />
        <FileField hint="CSV or JSONL." accept=".csv,.jsonl,.ndjson" inputRef={fileInput} onFile={setFile} />
        <Button type="submit" variant="primary" disabled={busy}>
          Upload dataset
        </Button>
      </form>
    </Panel>
  );
}
