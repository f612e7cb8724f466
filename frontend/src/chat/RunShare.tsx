// A finished run's Share (a read-only link, shown once) and Export (a zip that redoes it) buttons.
import { api, unwrap } from "../api/client";
import { ShareButton, ShareResult, useShare } from "../shared/ShareLink";

/** Runs that can be shared and exported: those that finished with an answer. */
export const SHAREABLE = new Set(["done", "stopped"]);

export function RunShare({ runId }: { runId: number }) {
  const share = useShare(() => unwrap(api.POST("/api/runs/{run_id}/share", { params: { path: { run_id: runId } } })));
  return (
    <div style={{ marginTop: "var(--s2)" }}>
      <div className="form-row">
        <ShareButton share={share} label={`Share run ${runId}`} />
        <a className="btn btn-small" href={`/api/runs/${runId}/export`} download aria-label={`Export run ${runId}`}>
          Export
        </a>
      </div>
      <ShareResult share={share} what="this run" />
    </div>
  );
}
