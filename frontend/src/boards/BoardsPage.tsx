// Comparison boards you can see, and a form for a new one.
import { useState } from "react";
import { Link } from "react-router";
import { api, unwrap } from "../api/client";
import { useResource } from "../api/useResource";
import { VisibilityBadge, formatDate, useDebounced } from "../library/shared";
import { Empty, Field, Loading, Notice, PageHeader, Panel } from "../ui/components";
import { CreateBoardForm } from "./CreateBoardForm";

export function BoardsPage() {
  const [q, setQ] = useState("");
  const query = useDebounced(q.trim());
  const setup = useResource(async () => {
    const [deployments, teams] = await Promise.all([
      unwrap(api.GET("/api/deployments", { params: { query: { limit: 100 } } })),
      unwrap(api.GET("/api/teams", { params: { query: { limit: 100 } } })),
    ]);
    return { deployments: deployments.items, teams: teams.items };
  }, "setup");
  const boards = useResource(() => unwrap(api.GET("/api/boards", { params: { query: { q: query || undefined, limit: 100 } } })), query);
  const items = boards.data?.items ?? [];
  return (
    <>
      <PageHeader title="Boards" />
      <Notice>{setup.error}</Notice>
      <div className="split-form">
        <div>{setup.data ? <CreateBoardForm deployments={setup.data.deployments} teams={setup.data.teams} /> : <Loading what="the form" />}</div>
        <Panel title="All boards you can see">
          <Field label="Search boards" hint="Words the name must contain.">
            {(id, describedBy) => (
              <input id={id} type="search" aria-describedby={describedBy} value={q} onChange={(e) => { setQ(e.target.value); }} />
            )}
          </Field>
          <Notice>{boards.error}</Notice>
          {boards.loading && !boards.data ? <Loading what="boards" /> : null}
          {boards.data && items.length === 0 ? <Empty>{query ? "No board matches." : "No boards yet: create one with the form."}</Empty> : null}
          {items.length > 0 ? (
            <div className="table-scroll">
              <table aria-label="Boards">
                <thead>
                  <tr>
                    <th scope="col">Name</th>
                    <th scope="col">Model</th>
                    <th scope="col">Evaluation set</th>
                    <th scope="col">Probes</th>
                    <th scope="col">Owner</th>
                    <th scope="col">Visibility</th>
                    <th scope="col">Updated</th>
                  </tr>
                </thead>
                <tbody>
                  {items.map((b) => (
                    <tr key={b.id}>
                      <td>
                        <Link to={`/boards/${b.id}`}>{b.name}</Link>
                        {b.description ? <div className="meta">{b.description}</div> : null}
                      </td>
                      <td>{b.deployment}</td>
                      <td>
                        {b.dataset_name}
                        <div className="meta">positive: {b.positive_label} · {b.pooling} token{b.pooling === "mean" ? "s" : ""}</div>
                      </td>
                      <td>{b.probe_ids.length}</td>
                      <td>{b.owner}</td>
                      <td><VisibilityBadge visibility={b.visibility} /></td>
                      <td className="meta nowrap">{formatDate(b.updated_at)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          ) : null}
        </Panel>
      </div>
    </>
  );
}
