"""Read-only share links: a secret URL that shows one run or one board to anyone holding it.

Only the token's hash is stored (as for API tokens): the link is shown once, when it is made.
Revoking a link makes it read as unknown at once; deleting its run or board deletes it.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from webapp.compare.models import Board
from webapp.playground.models import Run


class ShareLink(models.Model):
    token_hash = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="share_links"
    )
    run = models.ForeignKey(Run, on_delete=models.CASCADE, null=True, blank=True, related_name="share_links")
    board = models.ForeignKey(
        Board, on_delete=models.CASCADE, null=True, blank=True, related_name="share_links"
    )
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(run__isnull=False) & Q(board__isnull=True))
                | (Q(run__isnull=True) & Q(board__isnull=False)),
                name="sharing_sharelink_one_target",
            )
        ]

    def __str__(self) -> str:
        return f"share link {self.pk} ({self.kind} {self.target_id})"

    @property
    def kind(self) -> str:
        return "run" if self.run_id is not None else "board"

    @property
    def target_id(self) -> int:
        return int(self.run_id if self.run_id is not None else self.board_id)  # type: ignore[arg-type]
