"""Account, team, invitation and API-token operations.

Views and API handlers stay thin and call these. Authorization failures raise
``PermissionDenied``; bad input raises ``ValidationError``; both carry a message meant for the user.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import timedelta

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.text import slugify

from webapp.accounts.models import ApiToken, Invitation, Membership, Role, Team, User

log = logging.getLogger(__name__)

API_TOKEN_PREFIX = "stl_"
INVITATION_LIFETIME = timedelta(days=7)


def hash_token(raw: str) -> str:
    """The SHA-256 (hex) under which a secret token is stored."""
    return hashlib.sha256(raw.encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# Users
# --------------------------------------------------------------------------------------------
def sign_up(*, username: str, password: str, email: str = "") -> User:
    """Create a user after validating the username and password (Django's password validators)."""
    username = username.strip()
    if not username:
        raise ValidationError("A username is required.")
    if User.objects.filter(username__iexact=username).exists():
        raise ValidationError(f"The username {username!r} is taken.")
    candidate = User(username=username, email=email.strip())
    candidate.full_clean(exclude=["password"])
    validate_password(password, user=candidate)
    user = User.objects.create_user(username=username, email=email.strip(), password=password)
    log.info("accounts.signed_up", extra={"user_id": user.pk})
    return user


# --------------------------------------------------------------------------------------------
# Teams and roles
# --------------------------------------------------------------------------------------------
def role_in(user: User, team: Team) -> Role | None:
    """The user's role in the team, or None for a non-member."""
    if not user.is_authenticated:
        return None
    role = Membership.objects.filter(team=team, user=user).values_list("role", flat=True).first()
    return Role(role) if role is not None else None


def teams_of(user: User) -> QuerySet[Team]:
    """Every team the user belongs to, whatever the role."""
    return Team.objects.filter(memberships__user=user).order_by("name", "id")


def _require_owner(user: User, team: Team, action: str) -> None:
    if role_in(user, team) != Role.OWNER:
        raise PermissionDenied(f"Only an owner of {team.name!r} can {action}.")


def _owner_count(team: Team) -> int:
    return Membership.objects.filter(team=team, role=Role.OWNER).count()


def _locked_membership(team: Team, user: User) -> Membership:
    """The membership, locked for the transaction; the team's row is locked first so that two
    concurrent demotions cannot both see a second owner."""
    Team.objects.select_for_update().get(pk=team.pk)
    try:
        return Membership.objects.select_for_update().get(team=team, user=user)
    except Membership.DoesNotExist:
        raise ValidationError(f"{user.username} is not a member of {team.name!r}.") from None


@transaction.atomic
def create_team(user: User, *, name: str, slug: str = "") -> Team:
    """Create a team; its creator becomes its owner."""
    name = name.strip()
    if not name:
        raise ValidationError("A team name is required.")
    slug = slugify(slug or name)
    if not slug:
        raise ValidationError("The team needs a name (or slug) made of letters or digits.")
    if Team.objects.filter(slug=slug).exists():
        raise ValidationError(f"The team slug {slug!r} is taken.")
    try:
        with transaction.atomic():
            team = Team.objects.create(name=name, slug=slug)
    except IntegrityError:
        raise ValidationError(f"The team slug {slug!r} is taken.") from None
    Membership.objects.create(team=team, user=user, role=Role.OWNER)
    log.info("accounts.team_created", extra={"team_id": team.pk, "user_id": user.pk})
    return team


@transaction.atomic
def leave_team(user: User, team: Team) -> None:
    """Leave a team; its last owner cannot (transfer ownership or delete the team first)."""
    membership = _locked_membership(team, user)
    if membership.role == Role.OWNER and _owner_count(team) == 1:
        raise ValidationError(f"You are the last owner of {team.name!r}: make someone else an owner first.")
    membership.delete()
    log.info("accounts.team_left", extra={"team_id": team.pk, "user_id": user.pk})


@transaction.atomic
def remove_member(actor: User, team: Team, member: User) -> None:
    """An owner removes a member (not the team's last owner)."""
    _require_owner(actor, team, "remove members")
    membership = _locked_membership(team, member)
    if membership.role == Role.OWNER and _owner_count(team) == 1:
        raise ValidationError(f"{member.username} is the last owner of {team.name!r} and cannot be removed.")
    membership.delete()
    log.info("accounts.member_removed", extra={"team_id": team.pk, "user_id": member.pk, "by": actor.pk})


@transaction.atomic
def change_role(actor: User, team: Team, member: User, role: Role | str) -> Membership:
    """An owner changes a member's role; a team is never left without an owner."""
    _require_owner(actor, team, "change roles")
    try:
        new_role = Role(role)
    except ValueError:
        raise ValidationError(f"Unknown role {role!r}: use owner, member or viewer.") from None
    membership = _locked_membership(team, member)
    if membership.role == Role.OWNER and new_role != Role.OWNER and _owner_count(team) == 1:
        raise ValidationError(
            f"{member.username} is the last owner of {team.name!r}: make someone else an owner first."
        )
    membership.role = new_role
    membership.save(update_fields=["role"])
    log.info(
        "accounts.role_changed", extra={"team_id": team.pk, "user_id": member.pk, "role": new_role.value}
    )
    return membership


# --------------------------------------------------------------------------------------------
# Invitations by link
# --------------------------------------------------------------------------------------------
def invite_to_team(
    actor: User, team: Team, *, role: Role | str = Role.MEMBER, lifetime: timedelta = INVITATION_LIFETIME
) -> tuple[Invitation, str]:
    """An owner creates an invitation link; returns it with the raw token (shown once, never stored)."""
    _require_owner(actor, team, "invite people")
    try:
        invite_role = Role(role)
    except ValueError:
        raise ValidationError(f"Unknown role {role!r}: use owner, member or viewer.") from None
    if lifetime <= timedelta(0):
        raise ValidationError("An invitation must expire in the future.")
    raw = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        team=team,
        role=invite_role,
        created_by=actor,
        token_hash=hash_token(raw),
        expires_at=timezone.now() + lifetime,
    )
    log.info("accounts.invitation_created", extra={"team_id": team.pk, "invitation_id": invitation.pk})
    return invitation, raw


def list_invitations(actor: User, team: Team) -> QuerySet[Invitation]:
    """The team's invitations, newest first (owners only: the links grant membership)."""
    _require_owner(actor, team, "see invitations")
    return team.invitations.select_related("created_by", "accepted_by")


def invitation_status(invitation: Invitation) -> str:
    if invitation.accepted_at is not None:
        return "accepted"
    if invitation.revoked:
        return "revoked"
    return "expired" if invitation.expires_at <= timezone.now() else "pending"


@transaction.atomic
def revoke_invitation(actor: User, invitation: Invitation) -> None:
    """An owner revokes an invitation that has not been used yet."""
    _require_owner(actor, invitation.team, "revoke invitations")
    # Its current state, locked: an acceptance racing the revocation sees one or the other.
    current = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if current.accepted_at is not None:
        raise ValidationError("This invitation was already used: remove the member instead.")
    current.revoked = invitation.revoked = True
    current.save(update_fields=["revoked"])


@transaction.atomic
def accept_invitation(user: User, raw_token: str) -> Membership:
    """Join the invitation's team with its role. Each link works once, until it expires or is revoked."""
    invitation = (
        Invitation.objects.select_for_update()
        .select_related("team")
        .filter(token_hash=hash_token(raw_token))
        .first()
    )
    # One message for unknown, revoked, used and expired links: a link reveals nothing about a team.
    invalid = ValidationError("This invitation link is invalid, expired or already used.")
    if invitation is None or invitation.revoked or invitation.accepted_at is not None:
        raise invalid
    if invitation.expires_at <= timezone.now():
        raise invalid
    if Membership.objects.filter(team=invitation.team, user=user).exists():
        raise ValidationError(f"You are already a member of {invitation.team.name!r}.")
    membership = Membership.objects.create(team=invitation.team, user=user, role=invitation.role)
    invitation.accepted_by = user
    invitation.accepted_at = timezone.now()
    invitation.save(update_fields=["accepted_by", "accepted_at"])
    log.info("accounts.invitation_accepted", extra={"team_id": invitation.team_id, "user_id": user.pk})
    return membership


# --------------------------------------------------------------------------------------------
# Personal API tokens
# --------------------------------------------------------------------------------------------
def create_api_token(user: User, *, name: str) -> tuple[ApiToken, str]:
    """Create a personal API token; returns it with the raw ``stl_...`` value (shown once, never stored)."""
    name = name.strip()
    if not name:
        raise ValidationError("A token name is required.")
    if len(name) > ApiToken._meta.get_field("name").max_length:
        raise ValidationError("The token name is too long (100 characters at most).")
    raw = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(user=user, name=name, prefix=raw[:8], token_hash=hash_token(raw))
    log.info("accounts.api_token_created", extra={"user_id": user.pk, "token_id": token.pk})
    return token, raw


def revoke_api_token(user: User, token: ApiToken) -> None:
    """Revoke one of the user's own tokens (idempotent)."""
    if token.user_id != user.pk:
        raise PermissionDenied("You can only revoke your own API tokens.")
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        log.info("accounts.api_token_revoked", extra={"user_id": user.pk, "token_id": token.pk})


def revoke_all_api_tokens(user: User) -> int:
    """Revoke every live token of ``user`` (their password changed: whoever held the old one may
    hold a token too); how many."""
    count = ApiToken.objects.filter(user=user, revoked_at__isnull=True).update(revoked_at=timezone.now())
    log.info("accounts.api_tokens_revoked", extra={"user_id": user.pk, "count": count})
    return count


def authenticate_api_token(raw: str) -> User | None:
    """The active user owning this token, or None for an unknown, revoked or malformed token."""
    if not raw.startswith(API_TOKEN_PREFIX):
        return None
    digest = hash_token(raw)
    token = ApiToken.objects.select_related("user").filter(token_hash=digest).first()
    # The lookup is by hash, so the database never compares attacker-controlled secrets; the
    # constant-time comparison keeps the final check free of timing differences as well.
    if token is None or not hmac.compare_digest(token.token_hash, digest):
        return None
    if token.revoked_at is not None or not token.user.is_active:
        return None
    now = timezone.now()
    # Written at most once a minute per token: a busy script must not turn every request into a write.
    if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=1):
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user


# --------------------------------------------------------------------------------------------
# Look-ups for the API: what a user may see, or DoesNotExist (a 404 that reveals nothing)
# --------------------------------------------------------------------------------------------
def visible_team(user: User, team_id: int) -> Team:
    """The team if the user is a member of it; ``Team.DoesNotExist`` otherwise, so that a
    non-member cannot tell a team that exists from one that does not."""
    return Team.objects.get(pk=team_id, memberships__user=user)


def list_members(user: User, team: Team) -> QuerySet[Membership]:
    """The team's memberships (with their users), for members of the team only."""
    if role_in(user, team) is None:
        raise PermissionDenied(f"Only members of {team.name!r} can see its members.")
    return Membership.objects.filter(team=team).select_related("user").order_by("created_at", "id")


def team_member(team: Team, user_id: int) -> User:
    """The member of the team with this id; ``User.DoesNotExist`` when there is none."""
    return User.objects.get(pk=user_id, memberships__team=team)


def api_tokens_of(user: User) -> QuerySet[ApiToken]:
    """The user's own API tokens, revoked ones included (newest first)."""
    return ApiToken.objects.filter(user=user).order_by("-created_at", "-id")


def own_api_token(user: User, token_id: int) -> ApiToken:
    """One of the user's own tokens; ``ApiToken.DoesNotExist`` for anyone else's."""
    return ApiToken.objects.get(pk=token_id, user=user)
