"""The one check that a person may still use every library object a piece of work references.

Rights can be lost after the fact: a member leaves or is removed from a team, an owner makes a
vector private, a recipe fork keeps pointing at its source's vectors. A saved recipe version or a
stored run only proves that its author could see its references *when it was written*. So every
path that runs a model with someone's interventions (chat turns, completions, replays, batch runs,
sweeps, board evaluations, vector and probe jobs, and every resume or retry of them) asks
:func:`check_references` again, with the references of the work it is about to start, both when
the work is dispatched (web side, before anything is written) and when a worker claims it.

A refusal is a :class:`ReferenceRefused` naming the first reference that is no longer visible;
unknown and hidden objects read the same ("no vector vec_12 that you can see"), as everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from django.core.exceptions import PermissionDenied

from interventions.spec import parse_recipe
from webapp.accounts.models import User
from webapp.library.models import PROBE_PREFIX, VECTOR_PREFIX, Dataset, Owned, Probe, Recipe, SteeringVector
from webapp.library.services import library_id, spec_refs, visible_to

Kind = Literal["vector", "probe", "dataset", "recipe"]
_MODELS: dict[str, type[Owned]] = {
    "vector": SteeringVector,
    "probe": Probe,
    "dataset": Dataset,
    "recipe": Recipe,
}


@dataclass(frozen=True, order=True)
class Reference:
    """One library object a piece of work uses."""

    kind: Kind
    pk: int

    @property
    def label(self) -> str:
        """How a person names it: ``vec_12``, ``prb_3``, ``dataset 4``, ``recipe 5``."""
        if self.kind == "vector":
            return f"{VECTOR_PREFIX}{self.pk}"
        if self.kind == "probe":
            return f"{PROBE_PREFIX}{self.pk}"
        return f"{self.kind} {self.pk}"


class ReferenceRefused(PermissionDenied):
    """Work refused because its owner can no longer see one of the objects it uses."""

    code = "forbidden"

    def __init__(self, reference: Reference) -> None:
        self.reference = reference
        self.message = (
            f"no {reference.kind} {reference.label} that you can see: it was made private, deleted or "
            f"is no longer shared with you, so work that uses it cannot run"
        )
        super().__init__(self.message)


def of_library_ids(ids: Iterable[str]) -> set[Reference]:
    """The references among recipe ids (``vec_<pk>``, ``prb_<pk>``); anything else names nothing."""
    return {Reference(*parsed) for ref in ids if (parsed := library_id(ref)) is not None}  # type: ignore[arg-type]


def of_spec(spec: dict[str, Any] | None, content_hashes: dict[str, str] | None = None) -> set[Reference]:
    """Every vector and probe a stored spec uses: the ids its fields name and its pinned hashes'."""
    named = [ref for _, _, ref in spec_refs(parse_recipe(spec))] if spec else []
    return of_library_ids([*(content_hashes or {}), *named])


def check_references(user: User | Any, references: Iterable[Reference]) -> None:
    """Refuse (:class:`ReferenceRefused`) unless ``user`` can see every one of ``references``.

    One query per kind, whatever the number of references.
    """
    wanted: dict[str, set[int]] = {}
    for reference in references:
        wanted.setdefault(reference.kind, set()).add(reference.pk)
    for kind in sorted(wanted):
        pks = wanted[kind]
        model = _MODELS[kind]
        seen = set(visible_to(user, model._default_manager.filter(pk__in=pks)).values_list("pk", flat=True))
        missing = sorted(pks - seen)
        if missing:
            raise ReferenceRefused(Reference(kind, missing[0]))  # type: ignore[arg-type]
