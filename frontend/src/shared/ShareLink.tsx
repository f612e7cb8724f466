// Making a share link (of a run or a board) and showing its URL, once: the token is not stored in
// clear, so the page that made the link is the only place it is ever shown.
import { useState } from "react";
import { Link } from "react-router";
import type { Schemas } from "../api/client";
import { useAction } from "../api/useAction";
import type { Action } from "../api/useAction";
import { CopyField } from "../accounts/CopyField";
import { Button, Notice } from "../ui/components";

export type NewShareLink = Schemas["NewShareLinkOut"];

export interface Share {
  action: Action;
  /** The new link's full URL ("" until one is made). */
  url: string;
  share: () => void;
}

/** `create` posts the share request; `share()` runs it and keeps the new link's URL. */
export function useShare(create: () => Promise<NewShareLink>): Share {
  const action = useAction();
  const [url, setUrl] = useState("");
  const share = () => {
    void action.run(async () => {
      setUrl("");
      const link = await create();
      setUrl(`${window.location.origin}${link.path}`);
    });
  };
  return { action, url, share };
}

/** The Share button; `label` names what it shares for screen readers (e.g. “Share run 7”). */
export function ShareButton({ share, label }: { share: Share; label: string }) {
  return (
    <Button small disabled={share.action.busy} aria-label={label} onClick={share.share}>
      Share
    </Button>
  );
}

/** The failure's message, or the new link's URL with a copy button and where to revoke it. */
export function ShareResult({ share, what }: { share: Share; what: string }) {
  return (
    <>
      <Notice>{share.action.error}</Notice>
      {share.url ? (
        <CopyField
          label={`Share link to ${what}`}
          value={share.url}
          copyLabel="Copy link"
          hint={
            <>
              Anyone with this link can see {what}, read-only, without logging in. It is shown only once: copy it now. You
              can revoke it under <Link to="/account">Account</Link>.
            </>
          }
        />
      ) : null}
    </>
  );
}
