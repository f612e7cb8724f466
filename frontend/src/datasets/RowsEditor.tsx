// The rows of a dataset as an editable table, a page at a time: edit cells, add and delete rows,
// and paste many lines into a cell (CSV or TSV, e.g. copied from a spreadsheet): they fill the
// rows from that one down, adding rows as needed.
import { useState } from "react";
import type { ClipboardEvent } from "react";
import { Button } from "../ui/components";
import type { Cells, DatasetKind } from "./rows";
import { COLUMN_LABELS, parseDelimited, parsePasted } from "./rows";

export interface EditorRow {
  key: number;
  cells: Cells;
}

let nextKey = 1;
/** Rows with keys that stay with them through edits, inserts and deletes. */
export const keyed = (rows: readonly Cells[]): EditorRow[] => rows.map((cells) => ({ key: nextKey++, cells }));

export const PAGE_SIZE = 50;

/** `rows` with `pasted` written from row `at`, column `column` down (rows added as needed). */
export function pasteInto(rows: readonly EditorRow[], at: number, column: 0 | 1, text: string, kind: DatasetKind): EditorRow[] {
  const records: string[][] =
    column === 0 ? parsePasted(text, kind).rows.map((cells) => [...cells]) : parseDelimited(text).map((r) => [r[0] ?? ""]);
  const next = [...rows];
  records.forEach((record, k) => {
    const index = at + k;
    const current = next[index] ?? keyed([["", ""]])[0];
    if (!current) return;
    const cells: [string, string] = [...current.cells];
    record.slice(0, 2 - column).forEach((value, j) => {
      cells[column + j] = value;
    });
    next[index] = { key: current.key, cells };
  });
  return next;
}

export function RowsEditor({
  kind,
  rows,
  onChange,
  errors,
  page,
  onPage,
}: {
  kind: DatasetKind;
  rows: readonly EditorRow[];
  onChange: (rows: EditorRow[]) => void;
  /** Row index -> its problem. */
  errors: Record<number, string>;
  page: number;
  onPage: (page: number) => void;
}) {
  const [focusKey, setFocusKey] = useState<number | null>(null);
  const labels = COLUMN_LABELS[kind];
  const pages = Math.max(1, Math.ceil(rows.length / PAGE_SIZE));
  const current = Math.min(page, pages - 1);
  const start = current * PAGE_SIZE;
  const shown = rows.slice(start, start + PAGE_SIZE);

  const edit = (index: number, column: 0 | 1, value: string) => {
    onChange(
      rows.map((row, i) => {
        if (i !== index) return row;
        const cells: [string, string] = [...row.cells];
        cells[column] = value;
        return { key: row.key, cells };
      }),
    );
  };
  const paste = (index: number, column: 0 | 1) => (event: ClipboardEvent<HTMLInputElement>) => {
    const text = event.clipboardData.getData("text/plain");
    if (!/[\n\t]/.test(text.replace(/\r?\n$/, ""))) return; // one value: the input takes it
    event.preventDefault();
    onChange(pasteInto(rows, index, column, text, kind));
  };
  const addRow = () => {
    const [row] = keyed([["", ""]]);
    if (!row) return;
    onChange([...rows, row]);
    setFocusKey(row.key);
    onPage(Math.floor(rows.length / PAGE_SIZE));
  };

  return (
    <div>
      <div className="table-scroll">
        <table className="rows-editor" aria-label="Rows">
          <colgroup>
            <col />
            <col />
            <col className={kind === "labelled" ? "label-col" : undefined} />
            <col />
          </colgroup>
          <thead>
            <tr>
              <th scope="col">#</th>
              <th scope="col">{labels[0]}</th>
              <th scope="col">{labels[1]}</th>
              <th scope="col"><span className="sr-only">Actions</span></th>
            </tr>
          </thead>
          <tbody>
            {shown.flatMap((row, offset) => {
              const index = start + offset;
              const error = errors[index];
              const errorId = `row-error-${row.key}`;
              const cell = (column: 0 | 1) => (
                <td>
                  <input
                    type="text"
                    aria-label={`Row ${index + 1} ${labels[column].toLowerCase()}`}
                    aria-invalid={error ? true : undefined}
                    aria-describedby={error ? errorId : undefined}
                    value={row.cells[column]}
                    ref={(node) => {
                      if (node && column === 0 && focusKey === row.key) {
                        node.focus();
                        setFocusKey(null);
                      }
                    }}
                    onChange={(e) => { edit(index, column, e.target.value); }}
                    onPaste={paste(index, column)}
                  />
                </td>
              );
              const out = [
                <tr key={row.key} className={error ? "row-invalid" : undefined} data-row={index}>
                  <td className="row-number">{index + 1}</td>
                  {cell(0)}
                  {cell(1)}
                  <td>
                    <Button
                      small
                      variant="ghost"
                      aria-label={`Delete row ${index + 1}`}
                      onClick={() => { onChange(rows.filter((_, i) => i !== index)); }}
                    >
                      Delete
                    </Button>
                  </td>
                </tr>,
              ];
              if (error) {
                out.push(
                  <tr key={`${row.key}-error`}>
                    <td />
                    <td colSpan={3} id={errorId} className="row-error">
                      Row {index + 1}: {error}
                    </td>
                  </tr>,
                );
              }
              return out;
            })}
          </tbody>
        </table>
      </div>
      <div className="pager">
        <Button onClick={addRow}>Add row</Button>
        {pages > 1 ? (
          <nav aria-label="Pages of rows" className="pager">
            <Button small disabled={current === 0} onClick={() => { onPage(current - 1); }}>Previous</Button>
            <span className="meta">
              Rows {start + 1}–{Math.min(rows.length, start + PAGE_SIZE)} of {rows.length}
            </span>
            <Button small disabled={current >= pages - 1} onClick={() => { onPage(current + 1); }}>Next</Button>
          </nav>
        ) : (
          <span className="meta">{rows.length} row{rows.length === 1 ? "" : "s"}</span>
        )}
      </div>
    </div>
  );
}
