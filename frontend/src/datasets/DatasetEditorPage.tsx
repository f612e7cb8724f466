// Write a dataset in the browser (/datasets/new) or edit an existing one's rows (/datasets/:id):
// the rows table, paste many lines at once, the checks the server makes shown at their rows
// before sending, and the server's own messages mapped back to the rows they name.
import { useMemo, useState } from "react";
import { Link, useLocation, useNavigate, useParams } from "react-router";
import { ApiError, api, unwrap } from "../api/client";
import type { Schemas } from "../api/client";
import { useAction } from "../api/useAction";
import { useResource } from "../api/useResource";
import type { Team } from "../library/shared";
import { VisibilityBadge } from "../library/shared";
import { SharingFields, sharingBody, useSharing } from "../library/sharing";
import { Badge, Button, Field, Loading, Notice, PageHeader, Panel } from "../ui/components";
import { fieldError } from "../ui/formErrors";
import type { EditorRow } from "./RowsEditor";
import { PAGE_SIZE, RowsEditor, keyed } from "./RowsEditor";
import type { Cells, DatasetKind } from "./rows";
import { COLUMNS, checkRows, fromApiRows, labelCounts, parsePasted, serverRowErrors, toApiRows } from "./rows";

type Dataset = Schemas["DatasetOut"];

export function DatasetEditorPage() {
  const { id } = useParams();
  const datasetId = id === undefined || id === "new" ? null : Number(id);
  const loaded = useResource(async () => {
    const teams = await unwrap(api.GET("/api/teams", { params: { query: { limit: 100 } } }));
    if (datasetId === null) return { teams: teams.items, dataset: null, rows: [] as Cells[] };
    const path = { params: { path: { dataset_id: datasetId } } };
    const [dataset, rows] = await Promise.all([
      unwrap(api.GET("/api/datasets/{dataset_id}", path)),
      unwrap(api.GET("/api/datasets/{dataset_id}/rows", path)),
    ]);
    return { teams: teams.items, dataset, rows: fromApiRows(rows.rows, rows.kind) };
  }, String(datasetId));
  if (loaded.error && !loaded.data) return <Notice>{loaded.error}</Notice>;
  if (!loaded.data || (loaded.loading && (loaded.data.dataset?.id ?? null) !== datasetId)) return <Loading what="the dataset" />;
  return <Editor key={String(datasetId)} {...loaded.data} />;
}

function Editor({ teams, dataset, rows: initial }: { teams: Team[]; dataset: Dataset | null; rows: Cells[] }) {
  const navigate = useNavigate();
  const location = useLocation();
  const arrived = (location.state as { notice?: string } | null)?.notice ?? "";
  const [kind, setKind] = useState<DatasetKind>(dataset?.kind ?? "labelled");
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const sharing = useSharing();
  const [saved, setSaved] = useState<Cells[]>(initial);
  const [rows, setRows] = useState<EditorRow[]>(() => keyed(initial.length > 0 ? initial : [["", ""]]));
  const [page, setPage] = useState(0);
  const [shown, setShown] = useState<{ rows: Record<number, string>; general: string[] }>({ rows: {}, general: [] });
  const [nameError, setNameError] = useState<string | undefined>(undefined);
  const action = useAction({
    onError: (exc) => {
      const fields = exc instanceof ApiError ? exc.fields : {};
      const mapped = serverRowErrors(fields.rows ?? []);
      setShown(mapped);
      setNameError(fieldError(fields, "name"));
      goToFirst(mapped.rows);
    },
  });

  const cells = useMemo(() => rows.map((r) => r.cells), [rows]);
  const dirty = JSON.stringify(cells) !== JSON.stringify(saved);
  const counts = kind === "labelled" ? labelCounts(cells) : [];
  const notes = checkRows(cells, kind).notes;

  function goToFirst(errors: Record<number, string>) {
    const first = Object.keys(errors).map(Number).sort((a, b) => a - b)[0];
    if (first !== undefined) setPage(Math.floor(first / PAGE_SIZE));
  }

  const save = () => {
    // Rows left wholly empty (e.g. the one a new dataset starts with) are not sent.
    const kept = rows.filter((r) => r.cells[0].trim() !== "" || r.cells[1].trim() !== "");
    const checked = checkRows(kept.map((r) => r.cells), kind);
    if (kept.length !== rows.length) setRows(kept.length > 0 ? kept : rows);
    if (dataset === null && !name.trim()) setNameError("Enter a name.");
    else setNameError(undefined);
    if (Object.keys(checked.rows).length > 0 || checked.general.length > 0 || (dataset === null && !name.trim())) {
      setShown(checked);
      goToFirst(checked.rows);
      action.fail("Nothing was saved: fix the rows marked below.");
      return;
    }
    setShown({ rows: {}, general: [] });
    const body = toApiRows(kept.map((r) => r.cells), kind);
    void action.run(async () => {
      if (dataset === null) {
        const created = await unwrap(
          api.POST("/api/datasets/rows", {
            body: { name, kind, rows: body, description, ...sharingBody(sharing) },
          }),
        );
        void navigate(`/datasets/${created.id}`, { state: { notice: `Created the dataset “${created.name}” (${created.row_count} rows).` } });
        return;
      }
      const result = await unwrap(
        api.PUT("/api/datasets/{dataset_id}/rows", { params: { path: { dataset_id: dataset.id } }, body: { rows: body } }),
      );
      const next = fromApiRows(result.rows, result.kind);
      setSaved(next);
      setRows(keyed(next));
      return `Saved ${next.length} rows.`;
    });
  };

  return (
    <>
      <PageHeader title={dataset ? `Edit rows: ${dataset.name}` : "New dataset"}>
        {dataset ? <Badge>{dataset.kind}</Badge> : null}
        {dataset ? <VisibilityBadge visibility={dataset.visibility} /> : null}
        {dataset ? <span className="meta">by {dataset.owner}</span> : null}
        <Link to={dataset ? `/library?section=datasets&item=${dataset.id}` : "/library?section=datasets"}>Back to the library</Link>
      </PageHeader>
      <Notice tone="success">{action.done || (dirty ? "" : arrived)}</Notice>
      <Notice>{action.error}</Notice>
      {shown.general.map((m) => <Notice key={m}>{m}</Notice>)}
      <div className="split-form">
        <div>
          <Panel title="Details">
            {dataset === null ? (
              <>
                <Field label="Name" error={nameError}>
                  {(fid) => <input id={fid} type="text" required maxLength={100} value={name} onChange={(e) => { setName(e.target.value); }} />}
                </Field>
                <Field label="Kind" hint={kind === "labelled" ? "Prompts with a class label: for training and evaluating probes." : "Pairs of contrasting prompts: for building steering vectors."}>
                  {(fid, describedBy) => (
                    <select id={fid} aria-describedby={describedBy} value={kind} onChange={(e) => { setKind(e.target.value === "contrastive" ? "contrastive" : "labelled"); }}>
                      <option value="labelled">Labelled prompts (text, label)</option>
                      <option value="contrastive">Contrastive pairs (positive, negative)</option>
                    </select>
                  )}
                </Field>
                <Field label="Description">
                  {(fid) => <textarea id={fid} rows={2} value={description} onChange={(e) => { setDescription(e.target.value); }} />}
                </Field>
                <SharingFields sharing={sharing} teams={teams} />
              </>
            ) : (
              <p>
                {dataset.description || "No description."}{" "}
                <span className="meta">Saving replaces the rows: jobs still running on the old rows fail, and boards use the new rows at their next evaluation.</span>
              </p>
            )}
            {counts.length > 0 ? (
              <p data-testid="label-counts">
                Labels:{" "}
                {counts.map(([label, count]) => (
                  <Badge key={label} tone="info">{`${label}: ${count}`}</Badge>
                ))}
              </p>
            ) : null}
            {notes.map((note) => <Notice key={note} tone="info">{note}</Notice>)}
            <Button variant="primary" disabled={action.busy || (dataset !== null && !dirty)} onClick={save}>
              {dataset ? "Save rows" : "Create dataset"}
            </Button>{" "}
            {dataset && dirty ? <Badge tone="warn">unsaved changes</Badge> : null}
          </Panel>
          <PastePanel
            kind={kind}
            onRows={(pasted, replace) => {
              const added = keyed(pasted);
              const base = rows.filter((r) => r.cells[0] !== "" || r.cells[1] !== "");
              const next = replace ? added : [...base, ...added];
              setRows(next);
              setShown({ rows: {}, general: [] });
              setPage(replace ? 0 : Math.floor(base.length / PAGE_SIZE));
            }}
          />
        </div>
        <Panel title={`Rows (${COLUMNS[kind].join(", ")})`}>
          <RowsEditor
            kind={kind}
            rows={rows}
            onChange={(next) => {
              setRows(next);
            }}
            errors={shown.rows}
            page={page}
            onPage={setPage}
          />
        </Panel>
      </div>
    </>
  );
}

/** Many rows at once: lines of CSV or TSV, added after the rows or replacing them. */
function PastePanel({ kind, onRows }: { kind: DatasetKind; onRows: (rows: Cells[], replace: boolean) => void }) {
  const [text, setText] = useState("");
  const [report, setReport] = useState<{ message: string; problems: string[] }>({ message: "", problems: [] });
  const [first, second] = COLUMNS[kind];
  const apply = (replace: boolean) => {
    const pasted = parsePasted(text, kind);
    if (pasted.rows.length > 0) onRows(pasted.rows, replace);
    setReport({
      message: pasted.rows.length > 0 ? `${replace ? "Replaced the rows with" : "Added"} ${pasted.rows.length} row${pasted.rows.length === 1 ? "" : "s"}${pasted.header ? " (the header line was skipped)" : ""}.` : "",
      problems: pasted.rows.length === 0 && pasted.problems.length === 0 ? ["No rows in the pasted text."] : pasted.problems,
    });
    if (pasted.problems.length === 0 && pasted.rows.length > 0) setText("");
  };
  return (
    <Panel title="Paste rows">
      <Notice tone="success">{report.message}</Notice>
      {report.problems.map((p) => <Notice key={p}>{p}</Notice>)}
      <Field
        label="Lines to add"
        hint={`One row per line: ${first} and ${second}, separated by a tab (copied from a spreadsheet) or a comma; quote a field that holds a comma. ${kind === "labelled" ? "The last field is the label." : ""}`}
      >
        {(id, describedBy) => (
          <textarea id={id} rows={6} aria-describedby={describedBy} value={text} onChange={(e) => { setText(e.target.value); }} />
        )}
      </Field>
      <div className="form-row">
        <Button disabled={!text.trim()} onClick={() => { apply(false); }}>Add to the rows</Button>
        <Button disabled={!text.trim()} onClick={() => { apply(true); }}>Replace all rows</Button>
      </div>
    </Panel>
  );
}
