// Teams: mine, creating one, accepting an invitation; for the selected team its members and roles,
// leaving it, and (owners) changing roles, removing members and managing invitation links.
import { useState } from "react";
import { api, unwrap } from "../api/client";
import type { Schemas } from "../api/client";
import { useAction } from "../api/useAction";
import { useResource } from "../api/useResource";
import { formatDate } from "../library/shared";
import { Badge, Button, Empty, Field, Loading, Notice, PageHeader, Panel } from "../ui/components";
import { CopyField } from "./CopyField";
import { ListStatus } from "./ListStatus";

type Team = Schemas["TeamOut"];
type Role = Schemas["Role"];
type Me = Schemas["MeOut"];
type Member = Schemas["MemberOut"];

const ROLES: readonly Role[] = ["owner", "member", "viewer"];
const isRole = (value: string): value is Role => (ROLES as readonly string[]).includes(value);

type Tone = "neutral" | "good" | "warn" | "bad" | "info";

const roleTone = (role: Role): Tone => (role === "owner" ? "info" : "neutral");

const STATUS_TONES: Partial<Record<string, Tone>> = { pending: "info", accepted: "good", expired: "warn", revoked: "neutral" };

const statusTone = (status: string): Tone => STATUS_TONES[status] ?? "neutral";

/** The token of an invitation, from the token itself or the whole link (…/accounts/invitations/<token>/). */
export function invitationToken(input: string): string {
  const text = input.trim();
  const match = /\/invitations\/([^/?#\s]+)/.exec(text);
  return match?.[1] ? decodeURIComponent(match[1]) : text;
}

export const invitationLink = (token: string): string =>
  `${window.location.origin}/accounts/invitations/${encodeURIComponent(token)}/`;

export function TeamsPage() {
  const me = useResource(() => unwrap(api.GET("/api/me")), "me");
  const teams = useResource(() => unwrap(api.GET("/api/teams", { params: { query: { limit: 100 } } })), "teams");
  const [selected, setSelected] = useState<number | null>(null);
  const [notice, setNotice] = useState("");
  const items = teams.data?.items ?? [];
  const current = items.find((t) => t.id === selected) ?? items[0];

  const choose = (id: number) => {
    setSelected(id);
    setNotice("");
    teams.reload();
  };

  return (
    <div>
      <PageHeader title="Teams" />
      <Notice>{me.error}</Notice>
      <Notice tone="success">{notice}</Notice>
      <div className="split">
        <div>
          <Panel title="My teams">
            <ListStatus list={teams} what="teams" empty="You are in no team yet: create one or accept an invitation." />
            {items.length > 0 ? (
              <table aria-label="My teams">
                <tbody>
                  {items.map((t) => (
                    <tr key={t.id} className={t.id === current?.id ? "selected" : undefined}>
                      <td>
                        <Button
                          variant="ghost"
                          small
                          aria-current={t.id === current?.id ? "true" : undefined}
                          onClick={() => {
                            setSelected(t.id);
                            setNotice("");
                          }}
                        >
                          {t.name}
                        </Button>
                        <div className="meta">{t.slug}</div>
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            ) : null}
          </Panel>
          <CreateTeam onCreated={(team) => { choose(team.id); }} />
          <AcceptInvitation onAccepted={(membership) => { choose(membership.team.id); }} />
        </div>
        <div>
          {current && me.data ? (
            <TeamDetail
              key={current.id}
              team={current}
              me={me.data}
              onLeft={(name) => {
                setSelected(null);
                teams.reload();
                setNotice(`You left the team “${name}”.`);
              }}
            />
          ) : (
            <Panel title="Team">
              {me.loading || teams.loading ? <Loading what="the team" /> : <Empty>Select a team to see its members.</Empty>}
            </Panel>
          )}
        </div>
      </div>
    </div>
  );
}

function CreateTeam({ onCreated }: { onCreated: (team: Team) => void }) {
  const [name, setName] = useState("");
  const [slug, setSlug] = useState("");
  const action = useAction();

  const create = async () => {
    const team = await unwrap(api.POST("/api/teams", { body: { name, slug: slug.trim() } }));
    setName("");
    setSlug("");
    onCreated(team);
    return `Created the team “${team.name}”.`;
  };

  return (
    <Panel title="Create a team">
      <Notice>{action.error}</Notice>
      <Notice tone="success">{action.done}</Notice>
      <form onSubmit={action.submit(create)}>
        <Field label="Team name">
          {(id) => <input id={id} type="text" required maxLength={100} value={name} onChange={(e) => { setName(e.target.value); }} />}
        </Field>
        <Field label="Slug" hint="Optional: made from the name when empty.">
          {(id, describedBy) => (
            <input id={id} type="text" aria-describedby={describedBy} value={slug} onChange={(e) => { setSlug(e.target.value); }} />
          )}
        </Field>
        <Button type="submit" variant="primary" disabled={action.busy}>
          Create team
        </Button>
      </form>
    </Panel>
  );
}

function AcceptInvitation({ onAccepted }: { onAccepted: (membership: Schemas["MembershipOut"]) => void }) {
  const [value, setValue] = useState("");
  const action = useAction();

  const accept = async () => {
    const membership = await unwrap(api.POST("/api/invitations/accept", { body: { token: invitationToken(value) } }));
    setValue("");
    onAccepted(membership);
    return `You joined “${membership.team.name}” as ${membership.role}.`;
  };

  return (
    <Panel title="Accept an invitation">
      <Notice>{action.error}</Notice>
      <Notice tone="success">{action.done}</Notice>
      <form onSubmit={action.submit(accept)}>
        <Field label="Invitation token or link" hint="Paste the link or the token an owner gave you.">
          {(id, describedBy) => (
            <input id={id} type="text" required aria-describedby={describedBy} value={value} onChange={(e) => { setValue(e.target.value); }} />
          )}
        </Field>
        <Button type="submit" variant="primary" disabled={action.busy || !value.trim()}>
          Accept invitation
        </Button>
      </form>
    </Panel>
  );
}

function TeamDetail({ team, me, onLeft }: { team: Team; me: Me; onLeft: (name: string) => void }) {
  const members = useResource(
    () => unwrap(api.GET("/api/teams/{team_id}/members", { params: { path: { team_id: team.id }, query: { limit: 100 } } })),
    String(team.id),
  );
  const action = useAction();
  const items = members.data?.items ?? [];
  const myRole = items.find((m) => m.user.id === me.id)?.role;
  const isOwner = myRole === "owner";

  const leave = () => {
    if (!window.confirm(`Leave the team “${team.name}”?`)) return;
    void action.run(async () => {
      await unwrap(api.POST("/api/teams/{team_id}/leave", { params: { path: { team_id: team.id } } }));
      onLeft(team.name);
    });
  };

  const remove = (member: Member) => {
    if (!window.confirm(`Remove ${member.user.username} from “${team.name}”?`)) return;
    void action.run(async () => {
      await unwrap(
        api.DELETE("/api/teams/{team_id}/members/{user_id}", {
          params: { path: { team_id: team.id, user_id: member.user.id } },
        }),
      );
      members.reload();
      return `Removed ${member.user.username}.`;
    });
  };

  const changeRole = (userId: number, role: Role) => {
    void action.run(async () => {
      await unwrap(
        api.PATCH("/api/teams/{team_id}/members/{user_id}", {
          params: { path: { team_id: team.id, user_id: userId } },
          body: { role },
        }),
      );
      members.reload();
      const who = items.find((m) => m.user.id === userId)?.user.username ?? "The member";
      return `${who} is now ${role === "owner" ? "an" : "a"} ${role}.`;
    });
  };

  return (
    <>
      <Panel
        title={team.name}
        actions={
          <Button variant="danger" small disabled={action.busy} onClick={leave}>
            Leave team
          </Button>
        }
      >
        <p className="meta">
          Slug <code>{team.slug}</code> · created {formatDate(team.created_at)}
          {myRole ? <> · your role: <Badge tone={roleTone(myRole)}>{myRole}</Badge></> : null}
        </p>
        <Notice>{members.error || action.error}</Notice>
        <Notice tone="success">{action.done}</Notice>
        <h3>Members</h3>
        {members.loading && !members.data ? <Loading what="members" /> : null}
        {items.length > 0 ? (
          <table aria-label="Members">
            <thead>
              <tr>
                <th scope="col">Member</th>
                <th scope="col">Role</th>
                <th scope="col">Joined</th>
                {isOwner ? <th scope="col">Actions</th> : null}
              </tr>
            </thead>
            <tbody>
              {items.map((m) => (
                <tr key={m.user.id}>
                  <td>
                    {m.user.username}
                    {m.user.id === me.id ? <span className="meta"> (you)</span> : null}
                  </td>
                  <td><Badge tone={roleTone(m.role)}>{m.role}</Badge></td>
                  <td>{formatDate(m.created_at)}</td>
                  {isOwner ? (
                    <td>
                      {m.user.id === me.id ? null : (
                        <Button
                          variant="danger"
                          small
                          disabled={action.busy}
                          aria-label={`Remove ${m.user.username}`}
                          onClick={() => { remove(m); }}
                        >
                          Remove
                        </Button>
                      )}
                    </td>
                  ) : null}
                </tr>
              ))}
            </tbody>
          </table>
        ) : null}
        {isOwner && items.length > 0 ? (
          <ChangeRole members={items} busy={action.busy} onChange={changeRole} />
        ) : myRole ? (
          <p className="meta">Only owners can change roles, remove members and invite people.</p>
        ) : null}
      </Panel>
      {isOwner ? <Invitations team={team} /> : null}
    </>
  );
}

function ChangeRole({
  members,
  busy,
  onChange,
}: {
  members: Member[];
  busy: boolean;
  onChange: (userId: number, role: Role) => void;
}) {
  const [user, setUser] = useState("");
  const [role, setRole] = useState<Role>("member");
  const chosen = user || String(members[0]?.user.id ?? "");

  return (
    <form
      onSubmit={(event) => {
        event.preventDefault();
        if (chosen) onChange(Number(chosen), role);
      }}
    >
      <h3>Change a role</h3>
      <div className="form-row">
        <Field label="Member">
          {(id) => (
            <select id={id} value={chosen} onChange={(e) => { setUser(e.target.value); }}>
              {members.map((m) => (
                <option key={m.user.id} value={m.user.id}>{m.user.username} ({m.role})</option>
              ))}
            </select>
          )}
        </Field>
        <RoleField label="New role" role={role} onRole={setRole} />
      </div>
      <Button type="submit" disabled={busy || !chosen}>
        Change role
      </Button>
    </form>
  );
}

function RoleField({
  label,
  hint,
  role,
  onRole,
}: {
  label: string;
  hint?: string;
  role: Role;
  onRole: (role: Role) => void;
}) {
  return (
    <Field label={label} hint={hint}>
      {(id, describedBy) => (
        <select
          id={id}
          aria-describedby={describedBy}
          value={role}
          onChange={(e) => {
            if (isRole(e.target.value)) onRole(e.target.value);
          }}
        >
          {ROLES.map((r) => (
            <option key={r} value={r}>{r}</option>
          ))}
        </select>
      )}
    </Field>
  );
}

function Invitations({ team }: { team: Team }) {
  const list = useResource(
    () => unwrap(api.GET("/api/teams/{team_id}/invitations", { params: { path: { team_id: team.id }, query: { limit: 100 } } })),
    String(team.id),
  );
  const [role, setRole] = useState<Role>("member");
  const [created, setCreated] = useState<Schemas["InvitationCreatedOut"] | null>(null);
  const action = useAction();
  const items = list.data?.items ?? [];

  const create = async () => {
    setCreated(null);
    const invitation = await unwrap(
      api.POST("/api/teams/{team_id}/invitations", { params: { path: { team_id: team.id } }, body: { role } }),
    );
    setCreated(invitation);
    list.reload();
  };

  const revoke = (invitationId: number) => {
    if (!window.confirm("Revoke this invitation? Its link will stop working.")) return;
    void action.run(async () => {
      await unwrap(
        api.DELETE("/api/teams/{team_id}/invitations/{invitation_id}", {
          params: { path: { team_id: team.id, invitation_id: invitationId } },
        }),
      );
      if (created?.id === invitationId) setCreated(null);
      list.reload();
    });
  };

  return (
    <Panel title="Invitations">
      <Notice>{action.error}</Notice>
      <form onSubmit={action.submit(create)}>
        <div className="form-row">
          <RoleField label="Invitation role" hint="The role the invited person gets." role={role} onRole={setRole} />
        </div>
        <Button type="submit" variant="primary" disabled={action.busy}>
          Create invitation
        </Button>
      </form>
      {created ? (
        <div>
          <Notice tone="success">
            Invitation created ({created.role}, expires {formatDate(created.expires_at)}). Copy the link now: it
            will not be shown again.
          </Notice>
          <CopyField label="Invitation link" value={invitationLink(created.token)} copyLabel="Copy link" />
          <CopyField label="Invitation token" value={created.token} copyLabel="Copy token" />
        </div>
      ) : null}
      <h3>All invitations</h3>
      <ListStatus list={list} what="invitations" empty="No invitations yet." />
      {items.length > 0 ? (
        <table aria-label="Invitations">
          <thead>
            <tr>
              <th scope="col">Role</th>
              <th scope="col">Status</th>
              <th scope="col">Created by</th>
              <th scope="col">Created</th>
              <th scope="col">Expires</th>
              <th scope="col">Accepted by</th>
              <th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {items.map((inv) => (
              <tr key={inv.id}>
                <td>{inv.role}</td>
                <td><Badge tone={statusTone(inv.status)}>{inv.status}</Badge></td>
                <td>{inv.created_by}</td>
                <td>{formatDate(inv.created_at)}</td>
                <td>{formatDate(inv.expires_at)}</td>
                <td>{inv.accepted_by ?? "—"}</td>
                <td>
                  {inv.status === "pending" ? (
                    <Button variant="danger" small disabled={action.busy} onClick={() => { revoke(inv.id); }}>
                      Revoke
                    </Button>
                  ) : null}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
    </Panel>
  );
}
