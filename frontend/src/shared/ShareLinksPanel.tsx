// The account's share links: what each opens, who made it, when, whether it still works, and
// Revoke for the live ones (their tokens are never listed: each was shown once, when made). They
// are the links this person made and every link to a run or board they can edit, whoever made it.
import { api, unwrap } from "../api/client";
import type { Schemas } from "../api/client";
import { useAction } from "../api/useAction";
import { useResource } from "../api/useResource";
import { formatDate } from "../library/shared";
import { Badge, Button, Empty, Loading, Notice, Panel } from "../ui/components";

type ShareLink = Schemas["ShareLinkOut"];

const target = (link: ShareLink) => `${link.kind} #${link.target_id}`;

export function ShareLinksPanel() {
  const list = useResource(() => unwrap(api.GET("/api/share-links")), "share-links");
  const action = useAction();
  const links = list.data ?? [];

  const revoke = (link: ShareLink) => {
    if (!window.confirm(`Revoke the share link to ${target(link)}? Anyone opening it will be told it was revoked.`)) return;
    void action.run(async () => {
      await unwrap(api.DELETE("/api/share-links/{link_id}", { params: { path: { link_id: link.id } } }));
      list.reload();
      return `Revoked the share link to ${target(link)}.`;
    });
  };

  return (
    <Panel title="Share links">
      <p className="meta">
        Read-only links that open without logging in: those you made, and every link to your runs and to the boards
        you can edit, whoever made it. A link stops working when its maker can no longer see what it shows.
      </p>
      <Notice>{list.error || action.error}</Notice>
      <Notice tone="success">{action.done}</Notice>
      {list.loading && !list.data ? <Loading what="share links" /> : null}
      {list.data && links.length === 0 ? <Empty>No share links yet: share a run from the chat or a board from its page.</Empty> : null}
      {links.length > 0 ? (
        <table>
          <caption className="sr-only">Share links</caption>
          <thead>
            <tr>
              <th scope="col">Kind</th>
              <th scope="col">Target</th>
              <th scope="col">Made by</th>
              <th scope="col">Created</th>
              <th scope="col">Status</th>
              <th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {links.map((link) => (
              <tr key={link.id}>
                <td>{link.kind}</td>
                <td>{target(link)}</td>
                <td>{link.created_by}</td>
                <td>{formatDate(link.created_at)}</td>
                <td>
                  {link.revoked_at ? (
                    <Badge tone="neutral">revoked {formatDate(link.revoked_at)}</Badge>
                  ) : (
                    <Badge tone="good">live</Badge>
                  )}
                </td>
                <td>
                  {link.revoked_at ? null : (
                    <Button
                      variant="danger"
                      small
                      disabled={action.busy}
                      aria-label={`Revoke the link to ${target(link)}`}
                      onClick={() => { revoke(link); }}
                    >
                      Revoke
                    </Button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
    </Panel>
  );
}
