"""Accounts endpoints: the current user, teams and members, invitations, personal API tokens.

Thin: parse, look the object up through a service (a missing or invisible object is a 404),
call one service, serialise. Permission checks live in ``webapp.accounts.services``.
"""

from __future__ import annotations

from datetime import datetime

from django.http import HttpRequest
from ninja import Router, Schema, Status
from ninja.pagination import paginate

from webapp.accounts import services
from webapp.accounts.models import ApiToken, Invitation, Membership, Role, Team, User
from webapp.api.auth import BrowserSessionAuth
from webapp.api.pagination import BoundedLimitOffsetPagination

router = Router(tags=["accounts"])


# --------------------------------------------------------------------------------------------
# Schemas: explicit fields only (no password hashes, no token hashes, ever)
# --------------------------------------------------------------------------------------------
class UserOut(Schema):
    id: int
    username: str


class MeOut(Schema):
    id: int
    username: str
    email: str


class TeamIn(Schema):
    name: str
    slug: str = ""


class TeamOut(Schema):
    id: int
    name: str
    slug: str
    created_at: datetime


class MemberOut(Schema):
    user: UserOut
    role: Role
    created_at: datetime


class MembershipOut(Schema):
    team: TeamOut
    role: Role


class RoleIn(Schema):
    role: Role


class InvitationIn(Schema):
    role: Role = Role.MEMBER


class InvitationCreatedOut(Schema):
    id: int
    team_id: int
    role: Role
    expires_at: datetime
    token: str  # the raw link token: shown this once, stored only as its hash


class InvitationOut(Schema):
    id: int
    team_id: int
    role: Role
    created_by: str
    created_at: datetime
    expires_at: datetime
    status: str  # pending, accepted, revoked or expired
    accepted_by: str | None

    @staticmethod
    def resolve_created_by(obj: Invitation) -> str:
        return obj.created_by.username

    @staticmethod
    def resolve_status(obj: Invitation) -> str:
        return services.invitation_status(obj)

    @staticmethod
    def resolve_accepted_by(obj: Invitation) -> str | None:
        return obj.accepted_by.username if obj.accepted_by else None


class AcceptIn(Schema):
    token: str


class TokenIn(Schema):
    name: str


class TokenOut(Schema):
    id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreatedOut(TokenOut):
    token: str  # the raw ``stl_...`` value: shown this once, stored only as its hash


class DetailOut(Schema):
    detail: str


def _user(request: HttpRequest) -> User:
    """The authenticated user, whichever credential authenticated the request."""
    user: User = request.auth  # type: ignore[attr-defined]
    return user


DENIED = {400: DetailOut, 403: DetailOut, 404: DetailOut}


# --------------------------------------------------------------------------------------------
# Me and teams
# --------------------------------------------------------------------------------------------
@router.get("/me", response=MeOut)
def me(request: HttpRequest) -> User:
    return _user(request)


@router.get("/teams", response=list[TeamOut])
@paginate(BoundedLimitOffsetPagination)
def list_teams(request: HttpRequest) -> object:
    return services.teams_of(_user(request))


@router.post("/teams", response={201: TeamOut, 400: DetailOut})
def create_team(request: HttpRequest, payload: TeamIn) -> Status[object]:
    return Status(201, services.create_team(_user(request), name=payload.name, slug=payload.slug))


@router.get("/teams/{team_id}", response={200: TeamOut, 404: DetailOut})
def get_team(request: HttpRequest, team_id: int) -> Team:
    return services.visible_team(_user(request), team_id)


@router.get("/teams/{team_id}/members", response={200: list[MemberOut], **DENIED})
@paginate(BoundedLimitOffsetPagination)
def list_members(request: HttpRequest, team_id: int) -> object:
    user = _user(request)
    return services.list_members(user, services.visible_team(user, team_id))


@router.post("/teams/{team_id}/invitations", response={201: InvitationCreatedOut, **DENIED})
def invite(request: HttpRequest, team_id: int, payload: InvitationIn) -> Status[object]:
    user = _user(request)
    invitation, raw = services.invite_to_team(user, services.visible_team(user, team_id), role=payload.role)
    return Status(
        201,
        {
            "id": invitation.pk,
            "team_id": invitation.team_id,
            "role": invitation.role,
            "expires_at": invitation.expires_at,
            "token": raw,
        },
    )


@router.get("/teams/{team_id}/invitations", response={200: list[InvitationOut], **DENIED})
@paginate(BoundedLimitOffsetPagination)
def list_invitations(request: HttpRequest, team_id: int) -> object:
    user = _user(request)
    return services.list_invitations(user, services.visible_team(user, team_id))


@router.delete("/teams/{team_id}/invitations/{invitation_id}", response={204: None, **DENIED})
def revoke_invitation(request: HttpRequest, team_id: int, invitation_id: int) -> Status[object]:
    user = _user(request)
    team = services.visible_team(user, team_id)
    services.revoke_invitation(user, team.invitations.get(pk=invitation_id))
    return Status(204, None)


@router.post("/invitations/accept", response={200: MembershipOut, 400: DetailOut})
def accept_invitation(request: HttpRequest, payload: AcceptIn) -> Membership:
    return services.accept_invitation(_user(request), payload.token)


@router.post("/teams/{team_id}/leave", response={204: None, **DENIED})
def leave_team(request: HttpRequest, team_id: int) -> Status[object]:
    user = _user(request)
    services.leave_team(user, services.visible_team(user, team_id))
    return Status(204, None)


@router.delete("/teams/{team_id}/members/{user_id}", response={204: None, **DENIED})
def remove_member(request: HttpRequest, team_id: int, user_id: int) -> Status[object]:
    user = _user(request)
    team = services.visible_team(user, team_id)
    services.remove_member(user, team, services.team_member(team, user_id))
    return Status(204, None)


@router.patch("/teams/{team_id}/members/{user_id}", response={200: MemberOut, **DENIED})
def change_role(request: HttpRequest, team_id: int, user_id: int, payload: RoleIn) -> Membership:
    user = _user(request)
    team = services.visible_team(user, team_id)
    return services.change_role(user, team, services.team_member(team, user_id), payload.role)


# --------------------------------------------------------------------------------------------
# Personal API tokens
# --------------------------------------------------------------------------------------------
@router.get("/tokens", response=list[TokenOut])
@paginate(BoundedLimitOffsetPagination)
def list_tokens(request: HttpRequest) -> object:
    return services.api_tokens_of(_user(request))


# A logged-in session only: a token (leaked, or held by a script) must not mint more tokens.
@router.post("/tokens", response={201: TokenCreatedOut, 400: DetailOut}, auth=BrowserSessionAuth())
def create_token(request: HttpRequest, payload: TokenIn) -> Status[object]:
    """Create a personal API token (shown once). Needs the browser's session, not a token; changing
    the password revokes every token."""
    token, raw = services.create_api_token(_user(request), name=payload.name)
    return Status(201, {**TokenOut.model_validate(token).model_dump(), "token": raw})


@router.delete("/tokens/{token_id}", response={204: None, 404: DetailOut})
def revoke_token(request: HttpRequest, token_id: int) -> Status[object]:
    user = _user(request)
    token: ApiToken = services.own_api_token(user, token_id)
    services.revoke_api_token(user, token)
    return Status(204, None)
