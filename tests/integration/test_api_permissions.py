"""The permission matrix, generated from the OpenAPI operations: every operation × {alice (owner of
team T), bob (member of T), carol (outside), anonymous} gets the exact status code from EXPECTED,
and a refused request changes nothing. An operation missing from EXPECTED fails, so no endpoint
can escape the matrix."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from webapp.accounts import services
from webapp.accounts.models import ApiToken, Invitation, Membership, Role, Team, User
from webapp.api.api import api

CSRF = "abcdefghijklmnopqrstuvwxyzABCDEF"
PEOPLE = ("alice", "bob", "carol", "anonymous")
OPERATIONS = sorted(
    (method.upper(), path)
    for path, operations in api.get_openapi_schema()["paths"].items()
    for method in operations
)

# (method, path template) -> (JSON body, expected status for alice, bob, carol, anonymous).
# {team_id} is team T, {user_id} is dave (a viewer of T), {token_id} is one of alice's tokens;
# {invitation} is a live invitation to T.
EXPECTED: dict[tuple[str, str], tuple[Any, tuple[int, int, int, int]]] = {
    ("GET", "/api/me"): (None, (200, 200, 200, 401)),
    ("GET", "/api/teams"): (None, (200, 200, 200, 401)),
    ("POST", "/api/teams"): ({"name": "New team"}, (201, 201, 201, 401)),
    ("GET", "/api/teams/{team_id}"): (None, (200, 200, 404, 401)),
    ("GET", "/api/teams/{team_id}/members"): (None, (200, 200, 404, 401)),
    ("POST", "/api/teams/{team_id}/invitations"): ({"role": "member"}, (201, 403, 404, 401)),
    ("POST", "/api/invitations/accept"): ({"token": "{invitation}"}, (400, 400, 200, 401)),
    ("POST", "/api/teams/{team_id}/leave"): (None, (400, 204, 404, 401)),
    ("DELETE", "/api/teams/{team_id}/members/{user_id}"): (None, (204, 403, 404, 401)),
    ("PATCH", "/api/teams/{team_id}/members/{user_id}"): ({"role": "member"}, (200, 403, 404, 401)),
    ("GET", "/api/tokens"): (None, (200, 200, 200, 401)),
    ("POST", "/api/tokens"): ({"name": "new"}, (201, 201, 201, 401)),
    ("DELETE", "/api/tokens/{token_id}"): (None, (204, 404, 404, 401)),
}


def _state() -> dict[str, list[tuple[Any, ...]]]:
    """Everything an operation could change (``last_used_at`` aside, which reading may touch)."""
    return {
        "teams": list(Team.objects.order_by("pk").values_list("pk", "name", "slug")),
        "memberships": list(Membership.objects.order_by("pk").values_list("team_id", "user_id", "role")),
        "invitations": list(
            Invitation.objects.order_by("pk").values_list("pk", "role", "accepted_by", "revoked")
        ),
        "tokens": list(ApiToken.objects.order_by("pk").values_list("pk", "user_id", "name", "revoked_at")),
    }


def test_every_operation_has_an_expectation_and_no_expectation_is_stale() -> None:
    assert sorted(EXPECTED) == OPERATIONS


@pytest.mark.parametrize("person", PEOPLE)
@pytest.mark.parametrize(("method", "template"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_permission_matrix(
    method: str,
    template: str,
    person: str,
    alice: User,
    bob: User,
    carol: User,
    make_user: Callable[..., User],
    team_t: Team,
) -> None:
    assert (method, template) in EXPECTED, f"{method} {template} has no row in EXPECTED: add one"
    body, codes = EXPECTED[(method, template)]
    expected = codes[PEOPLE.index(person)]

    dave = make_user("dave")
    Membership.objects.create(team=team_t, user=dave, role=Role.VIEWER)
    token, _ = services.create_api_token(alice, name="target")
    _, invitation = services.invite_to_team(alice, team_t, role=Role.VIEWER)
    path = template.format(team_id=team_t.pk, user_id=dave.pk, token_id=token.pk)
    if body is not None:
        body = {key: value.format(invitation=invitation) for key, value in body.items()}

    client = Client(enforce_csrf_checks=True)
    if person != "anonymous":
        client.force_login({"alice": alice, "bob": bob, "carol": carol}[person])
        client.cookies["csrftoken"] = CSRF
    before = _state()
    response = getattr(client, method.lower())(
        path, data=body, content_type="application/json", headers={"X-CSRFToken": CSRF}
    )
    assert response.status_code == expected, response.content
    if expected >= 400:
        assert _state() == before
        assert set(response.json()) == {"detail"}
    elif method == "GET":
        assert _state() == before
