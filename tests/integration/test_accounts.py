"""Accounts: sign-up, session login with throttling, passwords, teams and roles, invitations,
API tokens. alice owns team T, bob is a member, carol is outside."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from webapp.accounts import services
from webapp.accounts.models import ApiToken, Invitation, Membership, Role, Team, User

PASSWORD = "correct horse battery staple"


def _sha256(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# Sign-up, login, logout, passwords
# --------------------------------------------------------------------------------------------
def test_sign_up_creates_the_user_logs_them_in_and_hashes_with_argon2(client: Client, db: None) -> None:
    response = client.post(
        reverse("accounts:signup"),
        {"username": "dave", "email": "dave@example.org", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("app")
    dave = User.objects.get(username="dave")
    assert dave.password.startswith("argon2$")
    assert dave.check_password(PASSWORD)
    assert client.session["_auth_user_id"] == str(dave.pk)
    home = client.get(reverse("accounts:home"))
    assert home.status_code == 200
    assert b"Hello, dave" in home.content


def test_sign_up_refuses_a_taken_username_and_a_weak_password(alice: User) -> None:
    with pytest.raises(ValidationError, match="taken"):
        services.sign_up(username="ALICE", password=PASSWORD)
    with pytest.raises(ValidationError, match="too common"):
        services.sign_up(username="erin", password="password")
    assert not User.objects.filter(username="erin").exists()


def test_login_and_logout_with_the_session(client: Client, alice: User) -> None:
    response = client.post(reverse("accounts:login"), {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == reverse("app")
    assert client.session["_auth_user_id"] == str(alice.pk)
    # Logging out is a POST; a GET (a link a third party could embed) does nothing.
    assert client.get(reverse("accounts:logout")).status_code == 405
    assert client.session["_auth_user_id"] == str(alice.pk)
    response = client.post(reverse("accounts:logout"))
    assert response.status_code == 302
    assert "_auth_user_id" not in client.session
    assert client.get(reverse("accounts:home")).status_code == 302


def test_login_with_a_wrong_password_is_refused(client: Client, alice: User) -> None:
    response = client.post(reverse("accounts:login"), {"username": "alice", "password": "nope"})
    assert response.status_code == 200
    assert "_auth_user_id" not in client.session


def test_login_is_locked_after_five_failures_from_one_address(
    client: Client, alice: User, carol: User
) -> None:
    url = reverse("accounts:login")
    statuses = [
        client.post(url, {"username": "alice", "password": f"wrong-{i}"}).status_code for i in range(5)
    ]
    assert statuses == [200, 200, 200, 200, 429]
    # Locked: even the right password is refused now.
    response = client.post(url, {"username": "alice", "password": PASSWORD})
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
    # The lock is per username and address: carol from here, and alice from elsewhere, still log in.
    other = Client()
    assert other.post(url, {"username": "carol", "password": PASSWORD}).status_code == 302
    elsewhere = Client(REMOTE_ADDR="10.0.0.2")
    assert elsewhere.post(url, {"username": "alice", "password": PASSWORD}).status_code == 302
    assert elsewhere.session["_auth_user_id"] == str(alice.pk)


def test_change_password(client: Client, alice: User) -> None:
    client.force_login(alice)
    url = reverse("accounts:password_change")
    new = "a brand new passphrase 42"
    response = client.post(url, {"old_password": "wrong", "new_password1": new, "new_password2": new})
    assert response.status_code == 200
    alice.refresh_from_db()
    assert alice.check_password(PASSWORD)

    response = client.post(url, {"old_password": PASSWORD, "new_password1": new, "new_password2": new})
    assert response.status_code == 302
    assert response["Location"] == reverse("accounts:password_change_done")
    alice.refresh_from_db()
    assert alice.check_password(new)
    assert alice.password.startswith("argon2$")
    # The session that changed the password stays logged in.
    assert client.get(reverse("accounts:home")).status_code == 200


# --------------------------------------------------------------------------------------------
# Teams and roles
# --------------------------------------------------------------------------------------------
def test_create_team_makes_the_creator_its_owner(alice: User, bob: User, carol: User, team_t: Team) -> None:
    assert team_t.slug == "t"
    assert services.role_in(alice, team_t) == Role.OWNER
    assert services.role_in(bob, team_t) == Role.MEMBER
    assert services.role_in(carol, team_t) is None
    assert list(services.teams_of(alice)) == [team_t]
    assert list(services.teams_of(carol)) == []


def test_create_team_refuses_a_taken_slug_and_an_empty_name(carol: User, team_t: Team) -> None:
    with pytest.raises(ValidationError, match="slug 't' is taken"):
        services.create_team(carol, name="t")
    with pytest.raises(ValidationError, match="name is required"):
        services.create_team(carol, name="  ")
    assert list(services.teams_of(carol)) == []


def test_leave_team_and_the_last_owner_rule(alice: User, bob: User, carol: User, team_t: Team) -> None:
    with pytest.raises(ValidationError, match="last owner"):
        services.leave_team(alice, team_t)
    with pytest.raises(ValidationError, match="not a member"):
        services.leave_team(carol, team_t)
    services.leave_team(bob, team_t)
    assert services.role_in(bob, team_t) is None
    assert services.role_in(alice, team_t) == Role.OWNER


def test_an_owner_can_leave_once_someone_else_owns_the_team(alice: User, bob: User, team_t: Team) -> None:
    services.change_role(alice, team_t, bob, Role.OWNER)
    services.leave_team(alice, team_t)
    assert services.role_in(alice, team_t) is None
    assert services.role_in(bob, team_t) == Role.OWNER


def test_remove_member_is_for_owners_and_spares_the_last_owner(
    alice: User, bob: User, carol: User, team_t: Team
) -> None:
    with pytest.raises(PermissionDenied, match="Only an owner"):
        services.remove_member(bob, team_t, alice)
    with pytest.raises(PermissionDenied, match="Only an owner"):
        services.remove_member(carol, team_t, bob)
    with pytest.raises(ValidationError, match="last owner"):
        services.remove_member(alice, team_t, alice)
    assert Membership.objects.filter(team=team_t).count() == 2
    services.remove_member(alice, team_t, bob)
    assert services.role_in(bob, team_t) is None


def test_change_role_is_for_owners_and_never_leaves_a_team_without_owner(
    alice: User, bob: User, carol: User, team_t: Team
) -> None:
    with pytest.raises(PermissionDenied, match="Only an owner"):
        services.change_role(bob, team_t, bob, Role.OWNER)
    with pytest.raises(PermissionDenied, match="Only an owner"):
        services.change_role(carol, team_t, bob, Role.VIEWER)
    with pytest.raises(ValidationError, match="last owner"):
        services.change_role(alice, team_t, alice, Role.MEMBER)
    with pytest.raises(ValidationError, match="Unknown role"):
        services.change_role(alice, team_t, bob, "admin")
    with pytest.raises(ValidationError, match="not a member"):
        services.change_role(alice, team_t, carol, Role.VIEWER)
    assert services.role_in(bob, team_t) == Role.MEMBER

    services.change_role(alice, team_t, bob, Role.OWNER)
    services.change_role(alice, team_t, alice, Role.VIEWER)
    assert services.role_in(alice, team_t) == Role.VIEWER
    assert services.role_in(bob, team_t) == Role.OWNER


# --------------------------------------------------------------------------------------------
# Invitations by link
# --------------------------------------------------------------------------------------------
def test_invitation_token_is_hashed_at_rest(alice: User, team_t: Team) -> None:
    invitation, raw = services.invite_to_team(alice, team_t, role=Role.VIEWER)
    assert len(raw) >= 40
    assert invitation.token_hash == _sha256(raw)
    stored = list(Invitation.objects.values())
    assert len(stored) == 1
    assert raw not in repr(stored)


def test_invitation_link_joins_the_team_once(client: Client, alice: User, carol: User, team_t: Team) -> None:
    _, raw = services.invite_to_team(alice, team_t, role=Role.VIEWER)
    url = reverse("accounts:accept_invitation", args=[raw])
    client.force_login(carol)
    assert client.get(url).status_code == 200
    assert services.role_in(carol, team_t) is None
    response = client.post(url)
    assert response.status_code == 200
    assert b"You joined T." in response.content
    assert services.role_in(carol, team_t) == Role.VIEWER
    invitation = Invitation.objects.get()
    assert invitation.accepted_by == carol
    assert invitation.accepted_at is not None

    dave = services.sign_up(username="dave", password=PASSWORD)
    with pytest.raises(ValidationError, match="invalid, expired or already used"):
        services.accept_invitation(dave, raw)
    assert services.role_in(dave, team_t) is None


def test_expired_revoked_and_unknown_invitations_are_refused(
    client: Client, alice: User, carol: User, team_t: Team
) -> None:
    expired, expired_raw = services.invite_to_team(alice, team_t)
    Invitation.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    revoked, revoked_raw = services.invite_to_team(alice, team_t)
    services.revoke_invitation(alice, revoked)
    for raw in (expired_raw, revoked_raw, "not-a-token", expired.token_hash):
        with pytest.raises(ValidationError, match="invalid, expired or already used"):
            services.accept_invitation(carol, raw)
    client.force_login(carol)
    response = client.post(reverse("accounts:accept_invitation", args=[revoked_raw]))
    assert response.status_code == 400
    assert services.role_in(carol, team_t) is None


def test_only_owners_invite(alice: User, bob: User, carol: User, team_t: Team) -> None:
    services.change_role(alice, team_t, bob, Role.VIEWER)
    with pytest.raises(PermissionDenied, match="Only an owner"):
        services.invite_to_team(bob, team_t)
    services.change_role(alice, team_t, bob, Role.MEMBER)
    with pytest.raises(PermissionDenied, match="Only an owner"):
        services.invite_to_team(bob, team_t)
    with pytest.raises(PermissionDenied, match="Only an owner"):
        services.invite_to_team(carol, team_t)
    invitation, _ = services.invite_to_team(alice, team_t)
    with pytest.raises(PermissionDenied, match="Only an owner"):
        services.revoke_invitation(bob, invitation)
    assert Invitation.objects.count() == 1
    assert Invitation.objects.get().revoked is False


def test_a_member_cannot_accept_an_invitation_twice(alice: User, bob: User, team_t: Team) -> None:
    _, raw = services.invite_to_team(alice, team_t, role=Role.OWNER)
    with pytest.raises(ValidationError, match="already a member"):
        services.accept_invitation(bob, raw)
    assert services.role_in(bob, team_t) == Role.MEMBER


# --------------------------------------------------------------------------------------------
# Personal API tokens
# --------------------------------------------------------------------------------------------
def test_api_token_is_shown_once_and_hashed_at_rest(alice: User) -> None:
    token, raw = services.create_api_token(alice, name="script")
    assert raw.startswith("stl_")
    assert len(raw) >= 40
    assert token.prefix == raw[:8]
    assert token.token_hash == _sha256(raw)
    stored = list(ApiToken.objects.values())
    assert len(stored) == 1
    assert raw not in repr(stored)
    assert raw[8:] not in repr(stored)


def test_authenticate_api_token(alice: User) -> None:
    token, raw = services.create_api_token(alice, name="script")
    assert token.last_used_at is None
    assert services.authenticate_api_token(raw) == alice
    token.refresh_from_db()
    assert token.last_used_at is not None
    assert services.authenticate_api_token(raw + "x") is None
    assert services.authenticate_api_token(raw[:-1]) is None
    assert services.authenticate_api_token("stl_unknown") is None
    assert services.authenticate_api_token(token.token_hash) is None
    assert services.authenticate_api_token("") is None


def test_revoked_tokens_and_inactive_users_do_not_authenticate(alice: User, bob: User) -> None:
    token, raw = services.create_api_token(alice, name="script")
    with pytest.raises(PermissionDenied, match="your own"):
        services.revoke_api_token(bob, token)
    assert services.authenticate_api_token(raw) == alice
    services.revoke_api_token(alice, token)
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert services.authenticate_api_token(raw) is None

    _, other_raw = services.create_api_token(bob, name="cron")
    User.objects.filter(pk=bob.pk).update(is_active=False)
    assert services.authenticate_api_token(other_raw) is None


def test_api_token_name_is_required(alice: User) -> None:
    with pytest.raises(ValidationError, match="name is required"):
        services.create_api_token(alice, name=" ")
    assert ApiToken.objects.count() == 0


def test_owners_list_and_revoke_invitations_and_a_used_one_cannot_be_revoked(
    alice: User, bob: User, carol: User, team_t: Team
) -> None:
    pending, raw = services.invite_to_team(alice, team_t)
    used, used_raw = services.invite_to_team(alice, team_t, role="viewer")
    services.accept_invitation(carol, used_raw)
    statuses = {i.pk: services.invitation_status(i) for i in services.list_invitations(alice, team_t)}
    assert statuses[pending.pk] == "pending" and statuses[used.pk] == "accepted"
    with pytest.raises(PermissionDenied):
        services.list_invitations(bob, team_t)
    with pytest.raises(PermissionDenied):
        services.revoke_invitation(bob, pending)
    with pytest.raises(ValidationError, match="already used"):
        services.revoke_invitation(alice, used)
    services.revoke_invitation(alice, pending)
    pending.refresh_from_db()
    assert services.invitation_status(pending) == "revoked"
    with pytest.raises(ValidationError, match="invalid, expired or already used"):
        services.accept_invitation(bob, raw)
