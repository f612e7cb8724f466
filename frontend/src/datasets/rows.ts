// A dataset's rows as the editor holds them (two cells per row, whatever the kind), reading pasted
// CSV / TSV lines, the checks the server makes (shown before saving), and the server's messages
// ("line 7: 'label' is empty") mapped back to their rows.
import type { Schemas } from "../api/client";

export type DatasetKind = Schemas["DatasetKind"];
export type Cells = readonly [string, string];

/** The two columns of each kind, as the API names them and as the editor labels them. */
export const COLUMNS: Record<DatasetKind, readonly [string, string]> = {
  labelled: ["text", "label"],
  contrastive: ["positive", "negative"],
};
export const COLUMN_LABELS: Record<DatasetKind, readonly [string, string]> = {
  labelled: ["Text", "Label"],
  contrastive: ["Positive", "Negative"],
};

// The server's limits (webapp/library/datasets.py).
export const MAX_ROWS = 10_000;
export const MAX_TEXT_CHARS = 8_192;
export const MAX_LABEL_CHARS = 100;

/** Split delimited text into records: `"` quotes a field (`""` is a quote inside one), the
 * delimiter is a tab when the text has one (a spreadsheet's copy) and a comma otherwise. */
export function parseDelimited(text: string): string[][] {
  const delimiter = text.includes("\t") ? "\t" : ",";
  const records: string[][] = [];
  let record: string[] = [];
  let field = "";
  let quoted = false;
  let i = 0;
  const endField = () => {
    record.push(field);
    field = "";
  };
  const endRecord = () => {
    endField();
    records.push(record);
    record = [];
  };
  while (i < text.length) {
    const c = text[i] ?? "";
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i += 2;
        continue;
      }
      if (c === '"') quoted = false;
      else field += c;
      i += 1;
      continue;
    }
    if (c === '"' && field.trim() === "") {
      field = "";
      quoted = true;
    } else if (c === delimiter) {
      endField();
    } else if (c === "\n" || c === "\r") {
      endRecord();
      if (c === "\r" && text[i + 1] === "\n") i += 1;
    } else {
      field += c;
    }
    i += 1;
  }
  if (field !== "" || record.length > 0) endRecord();
  return records.filter((r) => r.some((cell) => cell.trim() !== ""));
}

export interface Pasted {
  rows: Cells[];
  /** The first line named the columns and was skipped. */
  header: boolean;
  /** Lines that could not be read as rows (they are left out). */
  problems: string[];
}

/** Pasted lines as rows of `kind`. A labelled row's last field is its label (the text before it
 * may hold unquoted commas); a first line that names the columns is skipped. */
export function parsePasted(text: string, kind: DatasetKind): Pasted {
  const records = parseDelimited(text);
  const [first, second] = COLUMNS[kind];
  let header = false;
  const head = records[0]?.map((cell) => cell.trim().toLowerCase());
  if (head && head.length === 2 && head[0] === first && head[1] === second) {
    records.shift();
    header = true;
  }
  const rows: Cells[] = [];
  const problems: string[] = [];
  records.forEach((record, index) => {
    const line = index + 1 + (header ? 1 : 0);
    if (record.length === 1) {
      rows.push([record[0] ?? "", ""]);
    } else if (record.length === 2) {
      const [a = "", b = ""] = record;
      rows.push(kind === "labelled" ? [a, b.trim()] : [a, b]);
    } else if (kind === "labelled") {
      const label = record[record.length - 1] ?? "";
      rows.push([record.slice(0, -1).join(text.includes("\t") ? "\t" : ","), label.trim()]);
    } else {
      problems.push(`Line ${line}: ${record.length} fields; a pair has 2 (quote a field that holds a comma).`);
    }
  });
  return { rows, header, problems };
}

export interface Checked {
  /** Row index -> what is wrong with it. */
  rows: Record<number, string>;
  /** Problems of the whole dataset. */
  general: string[];
  /** Worth knowing, not blocking (e.g. a labelled set with one label). */
  notes: string[];
}

/** The server's checks, before sending: every cell filled, within its length limit. */
export function checkRows(rows: readonly Cells[], kind: DatasetKind): Checked {
  const [first, second] = COLUMNS[kind];
  const limits = kind === "labelled" ? [MAX_TEXT_CHARS, MAX_LABEL_CHARS] : [MAX_TEXT_CHARS, MAX_TEXT_CHARS];
  const bad: Record<number, string> = {};
  rows.forEach((cells, index) => {
    const problems: string[] = [];
    cells.forEach((cell, c) => {
      const name = c === 0 ? first : second;
      const limit = limits[c] ?? MAX_TEXT_CHARS;
      if (cell.trim() === "") problems.push(`the ${name} is empty`);
      else if (cell.length > limit) problems.push(`the ${name} is ${cell.length} characters (at most ${limit})`);
    });
    if (problems.length > 0) bad[index] = `${capital(problems.join("; "))}.`;
  });
  const general: string[] = [];
  if (rows.length === 0) general.push("Add at least one row.");
  if (rows.length > MAX_ROWS) general.push(`A dataset holds at most ${MAX_ROWS} rows; this one has ${rows.length}.`);
  const notes: string[] = [];
  if (kind === "labelled") {
    const labels = labelCounts(rows);
    if (labels.length > 0 && labels.length !== 2) notes.push(`Probes are trained on two labels; these rows have ${labels.length}.`);
  }
  return { rows: bad, general, notes };
}

const capital = (text: string): string => text.charAt(0).toUpperCase() + text.slice(1);

/** Each label with its number of rows, most frequent first. */
export function labelCounts(rows: readonly Cells[]): [string, number][] {
  const counts = new Map<string, number>();
  for (const [, label] of rows) if (label.trim() !== "") counts.set(label, (counts.get(label) ?? 0) + 1);
  return [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
}

export function toApiRows(rows: readonly Cells[], kind: DatasetKind): Record<string, string>[] {
  const [first, second] = COLUMNS[kind];
  return rows.map(([a, b]) => ({ [first]: a, [second]: b }));
}

export function fromApiRows(rows: readonly Record<string, string>[], kind: DatasetKind): Cells[] {
  const [first, second] = COLUMNS[kind];
  return rows.map((row) => [row[first] ?? "", row[second] ?? ""] as const);
}

/** The server's `rows` messages: those naming a line go to that row (line N is row N - 1: the rows
 * are sent one per line), the others stay general. */
export function serverRowErrors(messages: readonly string[]): Omit<Checked, "notes"> {
  const rows: Record<number, string> = {};
  const general: string[] = [];
  for (const message of messages) {
    const match = /line (\d+): (.*)$/s.exec(message);
    if (match) {
      const index = Number(match[1]) - 1;
      rows[index] = [rows[index], capital(match[2] ?? "")].filter(Boolean).join(" ");
    } else {
      general.push(message);
    }
  }
  return { rows, general };
}
