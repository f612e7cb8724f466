// The library's datasets (labelled prompts or contrastive pairs): search, details, upload, delete.
import { useState } from "react";
import { Link } from "react-router";
import { api, unwrap } from "../api/client";
import type { Schemas } from "../api/client";
import { Badge, Field } from "../ui/components";
import { ItemDetails, LibraryTab } from "./LibraryTab";
import type { Team } from "./shared";
import { toFormData } from "./shared";
import { UploadForm } from "./UploadForm";

type Dataset = Schemas["DatasetOut"];
type Kind = Schemas["DatasetKind"];

const KINDS: readonly Kind[] = ["labelled", "contrastive"];
const isKind = (value: string): value is Kind => (KINDS as readonly string[]).includes(value);

export function DatasetsTab({ teams, selected = null }: { teams: Team[]; selected?: number | null }) {
  return (
    <LibraryTab<Dataset>
      what="dataset"
      initialSelected={selected}
      actions={<Link className="btn btn-small btn-primary" to="/datasets/new">New dataset</Link>}
      load={({ q }) => unwrap(api.GET("/api/datasets", { params: { query: { q, limit: 100 } } }))}
      columns={[
        ["Kind", (d) => <Badge>{d.kind}</Badge>],
        ["Rows", (d) => d.row_count],
      ]}
      details={({ item: d, onDeleted }) =>
        d ? (
          <ItemDetails
            what="dataset"
            item={d}
            teams={teams}
            rows={[
              ["Kind", d.kind],
              ["Rows", d.row_count],
            ]}
            remove={() => unwrap(api.DELETE("/api/datasets/{dataset_id}", { params: { path: { dataset_id: d.id } } }))}
            onDeleted={onDeleted}
          >
            <p>
              <Link className="btn" to={`/datasets/${d.id}`}>Edit rows</Link>
            </p>
          </ItemDetails>
        ) : null
      }
      upload={(onUploaded) => <UploadDataset teams={teams} onUploaded={onUploaded} />}
    />
  );
}

function UploadDataset({ teams, onUploaded }: { teams: Team[]; onUploaded: (dataset: Dataset) => void }) {
  const [kind, setKind] = useState<Kind | "">("");
  return (
    <UploadForm
      what="dataset"
      teams={teams}
      fileHint="CSV or JSONL."
      accept=".csv,.jsonl,.ndjson"
      upload={(fields, file) =>
        unwrap(
          api.POST("/api/datasets", {
            body: { ...fields, kind: kind === "" ? null : kind },
            bodySerializer: (body) => toFormData(body, file),
          }),
        )
      }
      describe={(created) => `Uploaded the dataset “${created.name}” (${created.row_count} rows).`}
      onUploaded={onUploaded}
    >
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
    </UploadForm>
  );
}
