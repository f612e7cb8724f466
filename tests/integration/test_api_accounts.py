"""The accounts API: both credentials (session + CSRF, Bearer tokens), and the people rule —
alice owns team T, bob is a member, carol is outside; a refusal changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from webapp.accounts import services
from webapp.accounts.models import ApiToken, Invitation, Membership, Role, Team, User

CSRF = "abcdefghijklmnopqrstuvwxyzABCDEF"  # a valid 32-character CSRF secret
PASSWORD = "correct horse battery staple"  # the people fixtures' (tests/integration/conftest.py)


@pytest.fixture
def session() -> Callable[[User], Client]:
    """A browser for the user: logged in, CSRF checks enforced, holding the CSRF cookie."""

    def make(user: User) -> Client:
        client = Client(enforce_csrf_checks=True)
        client.force_login(user)
        client.cookies["csrftoken"] = CSRF
        return client

    return make


def _send(client: Client, method: str, path: str, body: Any = None, **headers: str) -> Any:
    return getattr(client, method.lower())(
        path, data=body, content_type="application/json", headers={"X-CSRFToken": CSRF, **headers}
    )


def _bearer(user: User) -> str:
    return "Bearer " + services.create_api_token(user, name="script")[1]


def _memberships(team: Team) -> set[tuple[str, str]]:
    return set(Membership.objects.filter(team=team).values_list("user__username", "role"))


# --------------------------------------------------------------------------------------------
# Credentials
# --------------------------------------------------------------------------------------------
def test_anonymous_requests_get_401(client: Client, team_t: Team) -> None:
    assert client.get("/api/me").status_code == 401
    assert client.get(f"/api/teams/{team_t.pk}").status_code == 401
    response = client.post("/api/teams", {"name": "X"}, content_type="application/json")
    assert response.status_code == 401
    assert response.json() == {"detail": "Unauthorized"}
    assert not Team.objects.filter(name="X").exists()


def test_session_auth_reads_without_csrf_but_writes_need_the_csrf_token(
    session: Callable[[User], Client], alice: User
) -> None:
    browser = session(alice)
    me = browser.get("/api/me")
    assert me.status_code == 200
    assert me.json() == {"id": alice.pk, "username": "alice", "email": "alice@example.org"}
    # The session cookie alone (no X-CSRFToken header) is refused.
    refused = browser.post("/api/teams", {"name": "Forged"}, content_type="application/json")
    assert refused.status_code == 403
    assert not Team.objects.filter(name="Forged").exists()
    # A wrong token too.
    refused = _send(browser, "POST", "/api/teams", {"name": "Forged"}, **{"X-CSRFToken": "x" * 32})
    assert refused.status_code == 403
    assert not Team.objects.filter(name="Forged").exists()
    created = _send(browser, "POST", "/api/teams", {"name": "Real"})
    assert created.status_code == 201
    assert created.json()["slug"] == "real"
    assert services.role_in(alice, Team.objects.get(slug="real")) == Role.OWNER


def test_bearer_token_auth_needs_no_csrf_and_a_revoked_or_unknown_token_gets_401(alice: User) -> None:
    client = Client(enforce_csrf_checks=True)
    token, raw = services.create_api_token(alice, name="script")
    auth = {"Authorization": f"Bearer {raw}"}
    assert client.get("/api/me", headers=auth).json()["username"] == "alice"
    created = client.post("/api/teams", {"name": "Scripted"}, content_type="application/json", headers=auth)
    assert created.status_code == 201
    unknown = {"Authorization": "Bearer stl_" + "x" * 43}
    assert client.get("/api/me", headers=unknown).status_code == 401
    assert client.get("/api/me", headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    services.revoke_api_token(alice, token)
    assert client.get("/api/me", headers=auth).status_code == 401
    refused = client.post("/api/teams", {"name": "Late"}, content_type="application/json", headers=auth)
    assert refused.status_code == 401
    assert not Team.objects.filter(name="Late").exists()


# --------------------------------------------------------------------------------------------
# Teams
# --------------------------------------------------------------------------------------------
def test_teams_list_is_mine_and_paginated(
    session: Callable[[User], Client], alice: User, carol: User, team_t: Team
) -> None:
    for name in ["A", "B", "C"]:
        services.create_team(alice, name=name)
    services.create_team(carol, name="Carols")
    browser = session(alice)
    page = browser.get("/api/teams?limit=2&offset=1")
    assert page.status_code == 200
    body = page.json()
    assert body["count"] == 4
    assert [team["name"] for team in body["items"]] == ["B", "C"]
    assert set(body["items"][0]) == {"id", "name", "slug", "created_at"}
    assert [t["name"] for t in session(carol).get("/api/teams").json()["items"]] == ["Carols"]


def test_carol_gets_404_on_every_team_t_endpoint_and_nothing_changes(
    session: Callable[[User], Client], carol: User, bob: User, team_t: Team
) -> None:
    browser = session(carol)
    before = _memberships(team_t)
    t = team_t.pk
    calls = [
        ("GET", f"/api/teams/{t}", None),
        ("GET", f"/api/teams/{t}/members", None),
        ("POST", f"/api/teams/{t}/invitations", {"role": "member"}),
        ("POST", f"/api/teams/{t}/leave", None),
        ("DELETE", f"/api/teams/{t}/members/{bob.pk}", None),
        ("PATCH", f"/api/teams/{t}/members/{bob.pk}", {"role": "owner"}),
    ]
    for method, path, body in calls:
        response = _send(browser, method, path, body)
        assert (method, path, response.status_code) == (method, path, 404)
        assert response.json() == {"detail": "Not Found"}
    # A team that does not exist looks exactly the same.
    assert _send(browser, "GET", "/api/teams/999999").json() == {"detail": "Not Found"}
    assert _memberships(team_t) == before
    assert not Invitation.objects.exists()


def test_members_see_the_team_and_its_members(
    session: Callable[[User], Client], alice: User, bob: User, team_t: Team
) -> None:
    response = session(bob).get(f"/api/teams/{team_t.pk}")
    assert response.status_code == 200
    assert response.json()["name"] == "T"
    members = session(bob).get(f"/api/teams/{team_t.pk}/members").json()
    assert members["count"] == 2
    assert [(m["user"]["username"], m["role"]) for m in members["items"]] == [
        ("alice", "owner"),
        ("bob", "member"),
    ]
    assert set(members["items"][0]["user"]) == {"id", "username"}


def test_bob_a_member_cannot_invite_remove_or_change_roles(
    session: Callable[[User], Client], alice: User, bob: User, make_user: Callable[..., User], team_t: Team
) -> None:
    dave = make_user("dave")
    Membership.objects.create(team=team_t, user=dave, role=Role.VIEWER)
    before = _memberships(team_t)
    browser = session(bob)
    t = team_t.pk
    for method, path, body in [
        ("POST", f"/api/teams/{t}/invitations", {"role": "member"}),
        ("DELETE", f"/api/teams/{t}/members/{dave.pk}", None),
        ("DELETE", f"/api/teams/{t}/members/{alice.pk}", None),
        ("PATCH", f"/api/teams/{t}/members/{bob.pk}", {"role": "owner"}),
        ("PATCH", f"/api/teams/{t}/members/{dave.pk}", {"role": "member"}),
    ]:
        response = _send(browser, method, path, body)
        assert (method, path, response.status_code) == (method, path, 403)
        assert "Only an owner" in response.json()["detail"]
    assert _memberships(team_t) == before
    assert not Invitation.objects.exists()


def test_alice_the_owner_can_invite_change_roles_and_remove(
    session: Callable[[User], Client], alice: User, bob: User, make_user: Callable[..., User], team_t: Team
) -> None:
    dave = make_user("dave")
    Membership.objects.create(team=team_t, user=dave, role=Role.MEMBER)
    browser = session(alice)
    t = team_t.pk
    changed = _send(browser, "PATCH", f"/api/teams/{t}/members/{bob.pk}", {"role": "viewer"})
    assert changed.status_code == 200
    assert changed.json()["role"] == "viewer"
    assert _send(browser, "DELETE", f"/api/teams/{t}/members/{dave.pk}").status_code == 204
    assert _memberships(team_t) == {("alice", "owner"), ("bob", "viewer")}
    # Not a member (carol's id) -> 404; a bad role -> 422; the last owner stays -> 400.
    assert _send(browser, "DELETE", f"/api/teams/{t}/members/{dave.pk}").status_code == 404
    assert _send(browser, "PATCH", f"/api/teams/{t}/members/{bob.pk}", {"role": "god"}).status_code == 422
    demote = _send(browser, "PATCH", f"/api/teams/{t}/members/{alice.pk}", {"role": "member"})
    assert demote.status_code == 400
    assert "last owner" in demote.json()["detail"]
    assert _memberships(team_t) == {("alice", "owner"), ("bob", "viewer")}


def test_invitation_accept_flow(
    session: Callable[[User], Client], alice: User, carol: User, team_t: Team
) -> None:
    created = _send(session(alice), "POST", f"/api/teams/{team_t.pk}/invitations", {"role": "viewer"})
    assert created.status_code == 201
    body = created.json()
    assert set(body) == {"id", "team_id", "role", "expires_at", "token"}
    assert (body["team_id"], body["role"]) == (team_t.pk, "viewer")
    assert Invitation.objects.get().token_hash == services.hash_token(body["token"])
    carols = session(carol)
    accepted = _send(carols, "POST", "/api/invitations/accept", {"token": body["token"]})
    assert accepted.status_code == 200
    assert accepted.json()["team"]["id"] == team_t.pk
    assert accepted.json()["role"] == "viewer"
    assert services.role_in(carol, team_t) == Role.VIEWER
    # Each link works once; an unknown link says the same and reveals nothing.
    again = _send(carols, "POST", "/api/invitations/accept", {"token": body["token"]})
    assert again.status_code == 400
    assert again.json() == {"detail": "This invitation link is invalid, expired or already used."}
    unknown = _send(carols, "POST", "/api/invitations/accept", {"token": "nope"})
    assert unknown.json() == again.json()
    assert carols.get(f"/api/teams/{team_t.pk}").status_code == 200


def test_leaving_a_team(session: Callable[[User], Client], alice: User, bob: User, team_t: Team) -> None:
    assert _send(session(bob), "POST", f"/api/teams/{team_t.pk}/leave").status_code == 204
    assert services.role_in(bob, team_t) is None
    assert session(bob).get(f"/api/teams/{team_t.pk}").status_code == 404
    last_owner = _send(session(alice), "POST", f"/api/teams/{team_t.pk}/leave")
    assert last_owner.status_code == 400
    assert services.role_in(alice, team_t) == Role.OWNER


# --------------------------------------------------------------------------------------------
# Personal API tokens
# --------------------------------------------------------------------------------------------
def test_tokens_are_shown_once_and_never_listed_with_hash_or_raw_value(
    session: Callable[[User], Client], alice: User
) -> None:
    browser = session(alice)
    created = _send(browser, "POST", "/api/tokens", {"name": "laptop"})
    assert created.status_code == 201
    raw = created.json()["token"]
    assert raw.startswith("stl_")
    token = ApiToken.objects.get(user=alice)
    assert token.token_hash == services.hash_token(raw)
    listed = browser.get("/api/tokens")
    assert listed.status_code == 200
    body = listed.json()
    assert body["count"] == 1
    assert set(body["items"][0]) == {"id", "name", "prefix", "created_at", "last_used_at", "revoked_at"}
    assert raw not in listed.content.decode()
    assert token.token_hash not in listed.content.decode()
    assert body["items"][0]["prefix"] == raw[:8]
    # The raw token authenticates; revoking it through the API ends that.
    assert Client().get("/api/me", headers={"Authorization": f"Bearer {raw}"}).status_code == 200
    assert _send(browser, "DELETE", f"/api/tokens/{token.pk}").status_code == 204
    assert Client().get("/api/me", headers={"Authorization": f"Bearer {raw}"}).status_code == 401
    assert browser.get("/api/tokens").json()["items"][0]["revoked_at"] is not None


def test_others_tokens_are_404_and_stay_active(
    session: Callable[[User], Client], alice: User, bob: User
) -> None:
    token, raw = services.create_api_token(bob, name="bobs")
    browser = session(alice)
    assert browser.get("/api/tokens").json() == {"items": [], "count": 0}
    response = _send(browser, "DELETE", f"/api/tokens/{token.pk}")
    assert response.status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None
    assert Client().get("/api/me", headers={"Authorization": f"Bearer {raw}"}).status_code == 200


def test_an_empty_token_name_is_a_400_with_the_services_message(
    session: Callable[[User], Client], alice: User
) -> None:
    response = _send(session(alice), "POST", "/api/tokens", {"name": "  "})
    assert response.status_code == 400
    assert response.json() == {"detail": "A token name is required."}
    assert not ApiToken.objects.exists()


def test_a_token_cannot_mint_tokens_only_a_logged_in_session_can(
    session: Callable[[User], Client], alice: User
) -> None:
    bearer = _bearer(alice)
    minted = Client().post(
        "/api/tokens",
        data={"name": "more"},
        content_type="application/json",
        headers={"Authorization": bearer},
    )
    assert minted.status_code == 401
    assert ApiToken.objects.filter(user=alice).count() == 1
    # The token still reads and revokes (a script may clean up after itself).
    assert Client().get("/api/tokens", headers={"Authorization": bearer}).status_code == 200
    assert _send(session(alice), "POST", "/api/tokens", {"name": "laptop"}).status_code == 201


def test_changing_the_password_revokes_every_token(alice: User, bob: User) -> None:
    alices, bobs = _bearer(alice), _bearer(bob)
    browser = Client()
    browser.force_login(alice)
    page = browser.get(reverse("accounts:password_change"))
    assert "revokes all your API tokens" in page.content.decode()
    new = "a different horse battery staple"
    changed = browser.post(
        reverse("accounts:password_change"),
        {"old_password": PASSWORD, "new_password1": new, "new_password2": new},
    )
    assert changed.status_code == 302
    assert "API tokens were revoked" in browser.get(changed["Location"]).content.decode()
    assert Client().get("/api/me", headers={"Authorization": alices}).status_code == 401
    assert not ApiToken.objects.filter(user=alice, revoked_at__isnull=True).exists()
    assert Client().get("/api/me", headers={"Authorization": bobs}).status_code == 200  # only hers
