// A board's probes: each with its site and held-out AUROC (remove one), and the picker to add more.
import { useState } from "react";
import { api, unwrap } from "../api/client";
import { useAction } from "../api/useAction";
import { formatMetric } from "../jobs/model";
import { Button, Empty, Notice, Panel } from "../ui/components";
import { fieldError, useFieldAction } from "../ui/formErrors";
import type { Board } from "./BoardPage";
import type { Evaluation } from "./evaluation";
import { ProbePicker, heldoutAuroc, useProbes } from "./ProbePicker";

/** A probe on the board as the panel lists it (its site is unknown when it is not visible to you). */
interface ProbeRow {
  id: number;
  name: string;
  public_id: string;
  owner?: string;
  layer?: number;
  point?: string;
  /** The held-out AUROC of its training, when it has one. */
  auroc: number | null;
}

/** The board's probes with their sites and held-out AUROC; remove one, or add more. */
export function BoardProbesPanel({ board, evaluation, onChanged }: { board: Board; evaluation: Evaluation | null; onChanged: () => void }) {
  const library = useProbes(board.deployment);
  const [adding, setAdding] = useState<number[]>([]);
  const remove = useAction();
  const add = useFieldAction();
  const rowOf = (id: number): ProbeRow => {
    const listed = library.data?.items.find((p) => p.id === id);
    if (listed) return { ...listed, auroc: heldoutAuroc(listed) };
    const evaluated = evaluation?.probes.find((p) => p.id === id);
    return evaluated ? { ...evaluated, auroc: null } : { id, name: `prb_${id}`, public_id: `prb_${id}`, auroc: null };
  };
  return (
    <Panel title={`Probes (${board.probe_ids.length})`}>
      <Notice>{remove.error}</Notice>
      {board.probe_ids.length === 0 ? <Empty>No probes yet: add some below.</Empty> : null}
      {board.probe_ids.length > 0 ? (
        <table aria-label="Probes on the board">
          <thead>
            <tr>
              <th scope="col">Probe</th>
              <th scope="col">Site</th>
              <th scope="col">Held-out AUROC</th>
              <th scope="col"><span className="sr-only">Actions</span></th>
            </tr>
          </thead>
          <tbody>
            {board.probe_ids.map((id) => {
              const p = rowOf(id);
              return (
                <tr key={id}>
                  <td>
                    {p.name}
                    <div className="meta">
                      <code>{p.public_id}</code>
                      {p.owner ? ` · ${p.owner}` : ""}
                    </div>
                  </td>
                  <td className="nowrap">{p.layer !== undefined ? `layer ${p.layer} · ${p.point ?? ""}` : "—"}</td>
                  <td className="num">{formatMetric(p.auroc)}</td>
                  <td>
                    <Button
                      small
                      variant="danger"
                      disabled={remove.busy}
                      aria-label={`Remove ${p.name} from the board`}
                      onClick={() =>
                        void remove.run(async () => {
                          await unwrap(api.DELETE("/api/boards/{board_id}/probes/{probe_id}", { params: { path: { board_id: board.id, probe_id: id } } }));
                          onChanged();
                        })
                      }
                    >
                      Remove
                    </Button>
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      ) : null}
      <Notice>{add.error}</Notice>
      <form
        className="section-title"
        onSubmit={add.submit(async () => {
          await unwrap(api.POST("/api/boards/{board_id}/probes", { params: { path: { board_id: board.id } }, body: { probe_ids: adding } }));
          setAdding([]);
          onChanged();
        })}
      >
        <ProbePicker deployment={board.deployment} selected={adding} onChange={setAdding} exclude={board.probe_ids} legend="Add probes" error={fieldError(add.errors, "probe_ids")} />
        <Button type="submit" disabled={add.busy || adding.length === 0}>
          {adding.length > 1 ? `Add ${adding.length} probes` : "Add probe"}
        </Button>
      </form>
    </Panel>
  );
}
