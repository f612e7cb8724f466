// What the library's three tabs have in common: the list (search, model filter, selection), the
// details panel with the shared properties and the delete flow, and the place of the upload form.
// A tab says only what differs: its endpoint, its columns, its details and its upload fields.
import { Fragment, useState } from "react";
import type { ReactNode } from "react";
import { useAction } from "../api/useAction";
import { useResource } from "../api/useResource";
import { Button, Empty, Field, Loading, Notice, Panel } from "../ui/components";
import type { Deployment, Listed, Row, Team } from "./shared";
import { KeyValueTable, VisibilityBadge, formatDate, provenanceRows, teamName, useDebounced } from "./shared";

const capitalized = (word: string): string => word.charAt(0).toUpperCase() + word.slice(1);

/** The list endpoint's filters; `deployment` only where the tab has the model filter. */
export interface ListFilter {
  q: string | undefined;
  deployment: string | undefined;
}

/** A column of the list between Name and Owner, Visibility: its header and its cell. */
export type Column<T> = readonly [header: string, cell: (item: T) => ReactNode];

export interface Selection<T> {
  id: number;
  /** The selected item if the current list shows it. */
  item: T | undefined;
  onDeleted: (name: string) => void;
}

/** One tab of the library. `what` is the singular noun ("vector"): the headings, labels and
 * messages are made from it ("Vectors", "Search vectors", "Vector details", ...). */
export function LibraryTab<T extends Listed>({
  what,
  load,
  deployments,
  columns,
  details,
  upload,
  initialSelected = null,
  actions,
}: {
  what: string;
  load: (filter: ListFilter) => Promise<{ items: T[]; count: number }>;
  /** Given, the list gets a model filter. */
  deployments?: Deployment[];
  columns: readonly Column<T>[];
  /** The details of the selected item; null shows the "Select a …" hint. */
  details: (selection: Selection<T>) => ReactNode;
  /** The upload form, which calls `onUploaded` with what it created. */
  upload: (onUploaded: (created: { id: number }) => void) => ReactNode;
  /** The item selected at first (from the page's URL). */
  initialSelected?: number | null;
  /** Buttons or links beside the list's title. */
  actions?: ReactNode;
}) {
  const many = `${what}s`;
  const [q, setQ] = useState("");
  const [deployment, setDeployment] = useState("");
  const query = useDebounced(q.trim());
  const list = useResource(
    () => load({ q: query || undefined, deployment: deployment || undefined }),
    `${query}\n${deployment}`,
  );
  const [selected, setSelected] = useState<number | null>(initialSelected);
  const [notice, setNotice] = useState("");
  const items = list.data?.items ?? [];

  const select = (id: number | null, message = "") => {
    setSelected(id);
    setNotice(message);
  };
  const shown =
    selected === null
      ? null
      : details({
          id: selected,
          item: items.find((item) => item.id === selected),
          onDeleted: (name) => {
            select(null, `Deleted the ${what} “${name}”.`);
            list.reload();
          },
        });

  return (
    <>
      <Panel title={capitalized(many)} actions={actions}>
        <ListControls what={many} q={q} onQ={setQ} deployments={deployments} deployment={deployment} onDeployment={setDeployment} />
        <Notice>{list.error}</Notice>
        <Notice tone="success">{notice}</Notice>
        {list.loading && !list.data ? <Loading what={many} /> : null}
        {list.data && items.length === 0 ? (
          <Empty>{query || deployment ? `No ${many} match.` : `No ${many} yet: upload one below.`}</Empty>
        ) : null}
        {items.length > 0 ? (
          <>
            <p className="meta">{countLine(list.data?.count ?? items.length, items.length, what)}</p>
            <table aria-label={capitalized(many)}>
              <thead>
                <tr>
                  <th scope="col">Name</th>
                  {columns.map(([header]) => (
                    <th key={header} scope="col">{header}</th>
                  ))}
                  <th scope="col">Owner</th>
                  <th scope="col">Visibility</th>
                </tr>
              </thead>
              <tbody>
                {items.map((item) => (
                  <tr key={item.id} className={item.id === selected ? "selected" : undefined}>
                    <td>
                      <SelectButton name={item.name} selected={item.id === selected} onSelect={() => { select(item.id); }} />
                    </td>
                    {columns.map(([header, cell]) => (
                      <td key={header}>{cell(item)}</td>
                    ))}
                    <td>{item.owner}</td>
                    <td><VisibilityBadge visibility={item.visibility} /></td>
                  </tr>
                ))}
              </tbody>
            </table>
          </>
        ) : null}
      </Panel>
      <div className="grid-2">
        <Panel title={`${capitalized(what)} details`}>
          {shown === null || shown === undefined ? (
            <Empty>{`Select a ${what} to see its details.`}</Empty>
          ) : (
            <Fragment key={selected}>{shown}</Fragment>
          )}
        </Panel>
        {upload((created) => {
          select(created.id);
          list.reload();
        })}
      </div>
    </>
  );
}

/** The details every item has: name, description, its properties (the tab's `rows`, then the
 * shared ones), the tab's own sections (`children`) and the delete button. */
export function ItemDetails({
  what,
  item,
  teams,
  rows,
  error = "",
  remove,
  onDeleted,
  children,
}: {
  what: string;
  item: Listed;
  teams: Team[];
  rows: readonly Row[];
  /** A refreshed load's error, above the (previous) details. */
  error?: string;
  remove: () => Promise<unknown>;
  onDeleted: (name: string) => void;
  children?: ReactNode;
}) {
  return (
    <div>
      <Notice>{error}</Notice>
      <h3>{item.name}</h3>
      {item.description ? <p>{item.description}</p> : null}
      <KeyValueTable
        label={`${capitalized(what)} properties`}
        rows={[
          ...rows,
          ["Content hash", <code>{item.content_hash}</code>],
          ["Owner", item.owner],
          ["Visibility", <VisibilityBadge visibility={item.visibility} />],
          ["Team", teamName(teams, item.team_id)],
          ["Forked from", item.forked_from_id === null ? "—" : `${what} #${item.forked_from_id}`],
          ["Created", formatDate(item.created_at)],
          ["Updated", formatDate(item.updated_at)],
          ...provenanceRows(item.provenance),
        ]}
      />
      {children}
      <DeleteButton what={what} name={item.name} remove={remove} onDeleted={() => { onDeleted(item.name); }} />
    </div>
  );
}

/** "Delete", after a confirm step; the server's message if it refuses. */
function DeleteButton({
  what,
  name,
  remove,
  onDeleted,
}: {
  what: string;
  name: string;
  remove: () => Promise<unknown>;
  onDeleted: () => void;
}) {
  const action = useAction();
  const run = () => {
    if (!window.confirm(`Delete the ${what} “${name}”? This cannot be undone.`)) return;
    void action.run(async () => {
      await remove();
      onDeleted();
    });
  };
  return (
    <div>
      <Notice>{action.error}</Notice>
      <Button variant="danger" disabled={action.busy} onClick={run}>
        Delete
      </Button>
    </div>
  );
}

/** The search box (passed to the list endpoint as `q`) and, for vectors and probes, the model filter. */
function ListControls({
  what,
  q,
  onQ,
  deployments,
  deployment,
  onDeployment,
}: {
  what: string;
  q: string;
  onQ: (value: string) => void;
  deployments: Deployment[] | undefined;
  deployment: string;
  onDeployment: (value: string) => void;
}) {
  return (
    <div className="form-row">
      <Field label={`Search ${what}`} hint="Words the name must contain.">
        {(id, describedBy) => (
          <input id={id} type="search" aria-describedby={describedBy} value={q} onChange={(e) => { onQ(e.target.value); }} />
        )}
      </Field>
      {deployments ? (
        <Field label="Model">
          {(id) => (
            <select id={id} value={deployment} onChange={(e) => { onDeployment(e.target.value); }}>
              <option value="">All models</option>
              {deployments.map((d) => (
                <option key={d.id} value={d.name}>{d.name}</option>
              ))}
            </select>
          )}
        </Field>
      ) : null}
    </div>
  );
}

/** The name cell's button: selects the row for the details panel. */
function SelectButton({ name, selected, onSelect }: { name: string; selected: boolean; onSelect: () => void }) {
  return (
    <Button variant="ghost" small aria-current={selected ? "true" : undefined} onClick={onSelect}>
      {name}
    </Button>
  );
}

function countLine(count: number, shown: number, what: string): string {
  const noun = `${what}${count === 1 ? "" : "s"}`;
  return count > shown ? `${count} ${noun}; the first ${shown} are listed: search to narrow them.` : `${count} ${noun}.`;
}
