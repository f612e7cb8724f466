import { render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { answer, json, paged, requests } from "../library/fakeFetch";
import { AccountPage } from "./AccountPage";
import { TeamsPage, invitationToken } from "./TeamsPage";

await vi.hoisted(async () => {
  const { fakeFetch } = await import("../library/fakeFetch");
  vi.stubGlobal("fetch", fakeFetch);
});

const when = "2024-01-01T00:00:00Z";
const team = { id: 5, name: "Lab", slug: "lab", created_at: when };
const members = [
  { user: { id: 1, username: "alice" }, role: "owner", created_at: when },
  { user: { id: 2, username: "bob" }, role: "member", created_at: when },
];

function teamsApi(meId: number) {
  answer(async (request, url) => {
    const route = `${request.method} ${url.pathname}`;
    if (route === "GET /api/me") return json(200, { id: meId, username: meId === 1 ? "alice" : "bob", email: "" });
    if (route === "GET /api/teams") return paged([team]);
    if (route === "GET /api/teams/5/members") return paged(members);
    if (route === "GET /api/teams/5/invitations") {
      return paged([{ id: 3, team_id: 5, role: "member", created_by: "alice", created_at: when, expires_at: when, status: "pending", accepted_by: null }]);
    }
    if (route === "POST /api/teams/5/invitations") return json(201, { id: 9, team_id: 5, role: "viewer", expires_at: when, token: "tok123" });
    if (route === "PATCH /api/teams/5/members/2") {
      const body = (await request.json()) as { role: string };
      return json(200, { ...members[1], role: body.role });
    }
    if (route === "POST /api/teams/5/leave") return json(400, { detail: "The last owner cannot leave." });
    if (route === "POST /api/invitations/accept") return json(400, { detail: "This invitation has expired." });
    return undefined;
  });
}

describe("TeamsPage", () => {
  beforeEach(() => {
    vi.spyOn(window, "confirm").mockReturnValue(true);
  });

  it("lets an owner see members, change a role and create an invitation link", async () => {
    teamsApi(1);
    const user = userEvent.setup();
    render(<TeamsPage />);
    expect(await screen.findByRole("heading", { name: "Lab" })).toBeTruthy();
    const table = await screen.findByRole("table", { name: "Members" });
    expect(within(table).getByText("bob")).toBeTruthy();

    await user.selectOptions(screen.getByLabelText("Member"), "2");
    await user.selectOptions(screen.getByLabelText("New role"), "viewer");
    await user.click(screen.getByRole("button", { name: "Change role" }));
    expect(await screen.findByText("bob is now a viewer.")).toBeTruthy();

    expect(await screen.findByText("pending")).toBeTruthy();
    await user.selectOptions(screen.getByLabelText("Invitation role"), "viewer");
    await user.click(screen.getByRole("button", { name: "Create invitation" }));
    const link = await screen.findByLabelText<HTMLInputElement>("Invitation link");
    expect(link.value).toBe(`${window.location.origin}/accounts/invitations/tok123/`);
    const post = requests.find((r) => r.method === "POST");
    expect(post ? await post.clone().json() : null).toEqual({ role: "viewer" });

    await user.click(screen.getByRole("button", { name: "Leave team" }));
    expect((await screen.findByRole("alert")).textContent).toBe("The last owner cannot leave.");
  });

  it("hides owner tools from members and shows a refused invitation's message", async () => {
    teamsApi(2);
    const user = userEvent.setup();
    render(<TeamsPage />);
    await screen.findByRole("table", { name: "Members" });
    await waitFor(() => {
      expect(screen.getByText(/Only owners can/)).toBeTruthy();
    });
    expect(screen.queryByRole("heading", { name: "Invitations" })).toBeNull();
    expect(screen.queryByRole("button", { name: /Remove/ })).toBeNull();

    await user.type(screen.getByLabelText("Invitation token or link"), "http://x/accounts/invitations/abc/");
    await user.click(screen.getByRole("button", { name: "Accept invitation" }));
    expect((await screen.findByRole("alert")).textContent).toBe("This invitation has expired.");
    const accept = requests.find((r) => r.method === "POST");
    expect(accept ? await accept.clone().json() : null).toEqual({ token: "abc" });
  });

  it("takes an invitation's token from a link or as it is", () => {
    expect(invitationToken(" https://h/accounts/invitations/t-1_x/ ")).toBe("t-1_x");
    expect(invitationToken("plain")).toBe("plain");
  });
});

describe("AccountPage", () => {
  it("shows who I am and a new token's secret once", async () => {
    answer((request, url) => {
      const route = `${request.method} ${url.pathname}`;
      if (route === "GET /api/me") return json(200, { id: 1, username: "alice", email: "a@example.com" });
      if (route === "GET /api/tokens") {
        return paged([{ id: 4, name: "old", prefix: "stl_ab", created_at: when, last_used_at: null, revoked_at: null }]);
      }
      if (route === "POST /api/tokens") {
        return json(201, { id: 6, name: "nb", prefix: "stl_cd", created_at: when, last_used_at: null, revoked_at: null, token: "stl_secret" });
      }
      if (route === "DELETE /api/tokens/4") return json(204);
      if (route === "GET /api/share-links") return json(200, []);
      return undefined;
    });
    const user = userEvent.setup();
    render(<AccountPage />);
    expect(await screen.findByText("a@example.com")).toBeTruthy();
    expect(screen.getByRole("link", { name: "Change your password" }).getAttribute("href")).toBe("/accounts/password/");

    await user.type(screen.getByLabelText("Token name"), "nb");
    await user.click(screen.getByRole("button", { name: "Create token" }));
    expect((await screen.findByLabelText<HTMLInputElement>("New token")).value).toBe("stl_secret");
    expect(screen.getByText(/will not be shown again/)).toBeTruthy();

    await user.click(screen.getByRole("button", { name: "Revoke old" }));
    expect(await screen.findByText("Revoked the token “old”.")).toBeTruthy();
    expect(requests.some((r) => r.method === "DELETE" && r.url.endsWith("/api/tokens/4"))).toBe(true);
  });
});

describe("AccountPage's share links", () => {
  it("lists the links and revokes a live one", async () => {
    let revoked: string | null = null;
    answer((request, url) => {
      const route = `${request.method} ${url.pathname}`;
      if (route === "GET /api/me") return json(200, { id: 1, username: "alice", email: "" });
      if (route === "GET /api/tokens") return paged([]);
      if (route === "GET /api/share-links") {
        return json(200, [
          { id: 2, kind: "run", target_id: 7, created_by: "alice", created_at: when, revoked_at: revoked },
          { id: 1, kind: "board", target_id: 3, created_by: "bob", created_at: when, revoked_at: when },
        ]);
      }
      if (route === "DELETE /api/share-links/2") {
        revoked = when;
        return json(204);
      }
      return undefined;
    });
    const confirm = vi.spyOn(window, "confirm").mockReturnValue(true);
    const user = userEvent.setup();
    render(<AccountPage />);
    const table = await screen.findByRole("table", { name: "Share links" });
    const stamp = new Date(when).toLocaleString();
    expect(within(table).getAllByRole("row").map((r) => r.textContent)).toEqual([
      "KindTargetMade byCreatedStatusActions",
      `runrun #7alice${stamp}liveRevoke`,
      `boardboard #3bob${stamp}revoked ${stamp}`,
    ]);
    expect(screen.queryByRole("button", { name: "Revoke the link to board #3" })).toBeNull();

    await user.click(screen.getByRole("button", { name: "Revoke the link to run #7" }));
    expect(await screen.findByText("Revoked the share link to run #7.")).toBeTruthy();
    expect(confirm).toHaveBeenCalledWith("Revoke the share link to run #7? Anyone opening it will be told it was revoked.");
    expect(requests.filter((r) => r.method === "DELETE").map((r) => new URL(r.url).pathname)).toEqual(["/api/share-links/2"]);
    await waitFor(() => {
      expect(within(table).getAllByRole("row")[1]?.textContent).toBe(`runrun #7alice${stamp}revoked ${stamp}`);
    });
  });
});
