// The account: who I am, the password-change link, personal API tokens (secret shown once) and
// share links.
import { useState } from "react";
import { api, unwrap } from "../api/client";
import type { Schemas } from "../api/client";
import { useAction } from "../api/useAction";
import { useResource } from "../api/useResource";
import { formatDate } from "../library/shared";
import { ShareLinksPanel } from "../shared/ShareLinksPanel";
import { Badge, Button, Field, Loading, Notice, PageHeader, Panel } from "../ui/components";
import { CopyField } from "./CopyField";
import { ListStatus } from "./ListStatus";

type Token = Schemas["TokenOut"];

export function AccountPage() {
  const me = useResource(() => unwrap(api.GET("/api/me")), "me");
  return (
    <div>
      <PageHeader title="Account" />
      <div className="grid-2">
        <Panel title="Profile">
          <Notice>{me.error}</Notice>
          {me.loading && !me.data ? <Loading what="your account" /> : null}
          {me.data ? (
            <table aria-label="Profile">
              <tbody>
                <tr>
                  <th scope="row">Username</th>
                  <td data-testid="account-username">{me.data.username}</td>
                </tr>
                <tr>
                  <th scope="row">Email</th>
                  <td>{me.data.email || "—"}</td>
                </tr>
                <tr>
                  <th scope="row">User id</th>
                  <td>{me.data.id}</td>
                </tr>
              </tbody>
            </table>
          ) : null}
          <p>
            <a href="/accounts/password/">Change your password</a>
          </p>
        </Panel>
        <ApiTokens />
      </div>
      <ShareLinksPanel />
    </div>
  );
}

function ApiTokens() {
  const list = useResource(() => unwrap(api.GET("/api/tokens", { params: { query: { limit: 100 } } })), "tokens");
  const [name, setName] = useState("");
  const [created, setCreated] = useState<Schemas["TokenCreatedOut"] | null>(null);
  const action = useAction();
  const items = list.data?.items ?? [];

  const create = async () => {
    setCreated(null);
    const token = await unwrap(api.POST("/api/tokens", { body: { name } }));
    setName("");
    setCreated(token);
    list.reload();
  };

  const revoke = (token: Token) => {
    if (!window.confirm(`Revoke the token “${token.name}”? Scripts using it will stop working.`)) return;
    void action.run(async () => {
      await unwrap(api.DELETE("/api/tokens/{token_id}", { params: { path: { token_id: token.id } } }));
      if (created?.id === token.id) setCreated(null);
      list.reload();
      return `Revoked the token “${token.name}”.`;
    });
  };

  return (
    <Panel title="API tokens">
      <p className="meta">
        Scripts authenticate with a personal token: <code>Authorization: Bearer stl_…</code>. Tokens are made here,
        while logged in (a token cannot make another), and changing your password revokes all of them.
      </p>
      <Notice>{action.error}</Notice>
      <Notice tone="success">{action.done}</Notice>
      <form onSubmit={action.submit(create)}>
        <Field label="Token name" hint="What the token is for, e.g. “notebook”.">
          {(id, describedBy) => (
            <input
              id={id}
              type="text"
              required
              maxLength={100}
              aria-describedby={describedBy}
              value={name}
              onChange={(e) => { setName(e.target.value); }}
            />
          )}
        </Field>
        <Button type="submit" variant="primary" disabled={action.busy || !name.trim()}>
          Create token
        </Button>
      </form>
      {created ? (
        <div>
          <Notice tone="success">
            Created the token “{created.name}”. Copy it now: it will not be shown again.
          </Notice>
          <CopyField label="New token" value={created.token} copyLabel="Copy token" />
        </div>
      ) : null}
      <h3>Your tokens</h3>
      <ListStatus list={list} what="tokens" empty="No tokens yet." />
      {items.length > 0 ? (
        <table aria-label="API tokens">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Prefix</th>
              <th scope="col">Created</th>
              <th scope="col">Last used</th>
              <th scope="col">Status</th>
              <th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {items.map((t) => (
              <tr key={t.id}>
                <td>{t.name}</td>
                <td><code>{t.prefix}…</code></td>
                <td>{formatDate(t.created_at)}</td>
                <td>{t.last_used_at ? formatDate(t.last_used_at) : "never"}</td>
                <td>
                  {t.revoked_at ? (
                    <Badge tone="neutral">revoked {formatDate(t.revoked_at)}</Badge>
                  ) : (
                    <Badge tone="good">active</Badge>
                  )}
                </td>
                <td>
                  {t.revoked_at ? null : (
                    <Button
                      variant="danger"
                      small
                      disabled={action.busy}
                      aria-label={`Revoke ${t.name}`}
                      onClick={() => { revoke(t); }}
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
