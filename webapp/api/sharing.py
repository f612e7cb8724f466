"""Read-only share links for runs and boards, and the shared pages they open (no login needed)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Router, Schema, Status

from webapp.accounts.models import User
from webapp.api.jobs import BoardDetailOut
from webapp.api.library import DENIED, DetailOut
from webapp.api.playground import RunOut, run_out
from webapp.compare.models import Board
from webapp.library import services as library
from webapp.playground.models import Message, Run
from webapp.sharing import services
from webapp.sharing.models import ShareLink

router = Router(tags=["sharing"])


class ShareLinkOut(Schema):
    id: int
    kind: str  # run or board
    target_id: int
    created_by: str  # the username of who made it (a board's editors list each other's links)
    created_at: datetime
    revoked_at: datetime | None


class NewShareLinkOut(ShareLinkOut):
    token: str  # shown once: the page is /app/shared/<token>, its data GET /api/shared/<token>
    path: str


class SharedMessageOut(Schema):
    role: str
    content: str


class SharedRunOut(RunOut):
    deployment: str
    messages: list[SharedMessageOut]  # the conversation up to the run's prompt


class SharedOut(Schema):
    kind: str
    run: SharedRunOut | None = None
    board: BoardDetailOut | None = None


def _user(request: HttpRequest) -> User:
    user: User = request.auth  # type: ignore[attr-defined]
    return user


def _link_out(link: ShareLink) -> dict[str, Any]:
    return {
        "id": link.pk,
        "kind": link.kind,
        "target_id": link.target_id,
        "created_by": link.created_by.get_username(),
        "created_at": link.created_at,
        "revoked_at": link.revoked_at,
    }


def _new(link: ShareLink, raw: str) -> Status[object]:
    return Status(201, {**_link_out(link), "token": raw, "path": f"/app/shared/{raw}"})


@router.post("/runs/{run_id}/share", response={201: NewShareLinkOut, **DENIED})
def share_run(request: HttpRequest, run_id: int) -> Status[object]:
    run = Run.objects.get(pk=run_id, user=_user(request))
    return _new(*services.share_run(_user(request), run))


@router.post("/boards/{board_id}/share", response={201: NewShareLinkOut, **DENIED})
def share_board(request: HttpRequest, board_id: int) -> Status[object]:
    board = library.get_visible(_user(request), Board, board_id)
    return _new(*services.share_board(_user(request), board))


@router.get("/share-links", response=list[ShareLinkOut])
def list_share_links(request: HttpRequest) -> Any:
    return [_link_out(link) for link in services.links_of(_user(request))]


@router.delete("/share-links/{link_id}", response={204: None, **DENIED})
def revoke_share_link(request: HttpRequest, link_id: int) -> Status[None]:
    user = _user(request)
    services.revoke(user, link_id)
    return Status(204, None)


@router.get("/shared/{share_token}", response={200: SharedOut, 404: DetailOut}, auth=None)
def shared(request: HttpRequest, share_token: str) -> dict[str, Any]:
    """What a share link shows, to anyone who has it (read-only; a revoked link is a 404)."""
    link = services.resolve(share_token)
    if link.run is not None:
        run = link.run
        history = Message.objects.filter(conversation_id=run.conversation_id, pk__lte=run.prompt_message_id)
        messages = [{"role": m.role, "content": m.content} for m in history.order_by("id")]
        return {
            "kind": "run",
            "run": {**run_out(run), "deployment": run.deployment.name, "messages": messages},
        }
    return {"kind": "board", "board": link.board}
