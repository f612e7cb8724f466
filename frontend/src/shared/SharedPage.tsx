// A share link's page (/app/shared/<token>), for anyone holding the link, logged in or not: a run
// or a board, read-only. Unknown and revoked links read the same.
import { useParams } from "react-router";
import { ApiError, api, unwrap } from "../api/client";
import type { Schemas } from "../api/client";
import { useResource } from "../api/useResource";
import { Loading, Notice, PageHeader } from "../ui/components";
import { SharedBoard } from "./SharedBoard";
import { SharedRun } from "./SharedRun";

export const GONE = "This link does not exist or was revoked.";

/** The shared page's data, or null for a link that does not exist (any more). */
async function loadShared(token: string): Promise<Schemas["SharedOut"] | null> {
  try {
    return await unwrap(api.GET("/api/shared/{share_token}", { params: { path: { share_token: token } } }));
  } catch (exc) {
    if (exc instanceof ApiError && exc.status === 404) return null;
    throw exc;
  }
}

export function SharedPage() {
  const { token = "" } = useParams();
  const shared = useResource(() => loadShared(token), token);
  const data = shared.data;
  if (data?.kind === "run" && data.run) return <SharedRun run={data.run} />;
  if (data?.kind === "board" && data.board) return <SharedBoard board={data.board} />;
  return (
    <>
      <PageHeader title="Shared link" />
      {shared.error ? <Notice>{shared.error}</Notice> : null}
      {!shared.error && data === undefined ? <Loading what="the shared page" /> : null}
      {data !== undefined ? <Notice>{GONE}</Notice> : null}
    </>
  );
}
