"""Share links for runs and boards: made by who may share the object, revocable, read-only.

Whoever can edit an object lists and revokes every link to it, whoever made it (a board's owner
sees the links its team's editors made). A link resolves only while its creator can still see
its object: rights lost after the fact end the links they gave.
"""

from __future__ import annotations

import logging
import secrets

from django.db.models import Q, QuerySet
from django.utils import timezone

from webapp.accounts.models import User
from webapp.accounts.services import hash_token
from webapp.compare.models import Board
from webapp.library.services import can_edit, can_view, editable_by
from webapp.playground.models import Run
from webapp.playground.services import PlaygroundError, not_found
from webapp.sharing.models import ShareLink

log = logging.getLogger(__name__)

TOKEN_PREFIX = "shr_"
SHAREABLE_RUNS = ("done", "stopped")


def _new(user: User, **target: Run | Board) -> tuple[ShareLink, str]:
    raw = TOKEN_PREFIX + secrets.token_urlsafe(24)
    link = ShareLink.objects.create(token_hash=hash_token(raw), created_by=user, **target)
    log.info("sharing.link_created", extra={"link": link.pk, "kind": link.kind, "target": link.target_id})
    return link, raw


def share_run(user: User, run: Run) -> tuple[ShareLink, str]:
    """A link to ``user``'s finished run; (the link, its secret token — shown once)."""
    if run.user_id != user.pk:
        raise not_found("run")
    if run.status not in SHAREABLE_RUNS:
        raise PlaygroundError("invalid", f"run {run.pk} is {run.status}: only finished runs can be shared")
    return _new(user, run=run)


def share_board(user: User, board: Board) -> tuple[ShareLink, str]:
    """A link to a board ``user`` may edit (viewers cannot widen who sees it)."""
    if not can_edit(user, board):
        raise PlaygroundError("forbidden", "only the board's owner or its team's editors can share it")
    return _new(user, board=board)


def links_of(user: User) -> QuerySet[ShareLink]:
    """The links ``user`` lists and may revoke: those they made, and every link to an object they
    can edit (their runs; boards they own or edit with their team), whoever made it."""
    boards = editable_by(user, Board.objects.all())
    return (
        ShareLink.objects.filter(Q(created_by=user) | Q(run__user=user) | Q(board__in=boards))
        .select_related("created_by")
        .distinct()
    )


def revoke(user: User, link_id: int) -> ShareLink:
    """Revoke a link ``user`` may manage (see ``links_of``; others' read as unknown), at once."""
    link = links_of(user).filter(pk=link_id).first()
    if link is None:
        raise not_found("share link")
    if link.revoked_at is None:
        link.revoked_at = timezone.now()
        link.save(update_fields=["revoked_at"])
        log.info("sharing.link_revoked", extra={"link": link.pk, "by": user.pk})
    return link


def resolve(raw: str) -> ShareLink:
    """The live link of token ``raw``; unknown, malformed and revoked tokens read the same."""
    if not raw.startswith(TOKEN_PREFIX) or len(raw) > 100:
        raise not_found("shared page")
    link = (
        ShareLink.objects.select_related("run__prompt_message", "run__deployment", "board", "created_by")
        .filter(token_hash=hash_token(raw), revoked_at__isnull=True)
        .first()
    )
    if link is None or not _creator_can_view(link):
        raise not_found("shared page")
    return link


def _creator_can_view(link: ShareLink) -> bool:
    """A link shows only what its creator may still see: one who lost the object (removed from
    its team, the object made private) no longer shares it."""
    if link.run is not None:
        return link.run.user_id == link.created_by_id
    return link.board is not None and can_view(link.created_by, link.board)
