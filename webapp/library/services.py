"""Library operations: deployments, uploads, recipes and their versions, forks, visibility.

Views, API handlers and commands stay thin and call these. Authorization failures raise
``PermissionDenied``; bad input raises ``ValidationError``; both carry a message for the user.

Ids in recipes
--------------
A recipe spec references library objects by their public id: ``vec_<pk>`` for a steering vector
(used by ``steer.vector``, ``ablate.mean``, ``project_out.direction``, ``clamp.direction``) and
``prb_<pk>`` for a probe (``probe.probe``, ``when.probe``). The prefix makes a vector id used where
a probe belongs an error the user can read, and keeps ids of the two tables apart. Bare content
hashes (``sha256:<hex>``, which ``interventions.spec`` also accepts) are refused in stored recipes:
a stored recipe names objects whose visibility can be checked.

Visibility
----------
* ``private``: the owner only;
* ``team``: the owner and every member of the team (owner, member or viewer role) can see it;
* ``public``: everyone can see it.

Editing (content, versions, deletion): the owner, or an ``owner``/``member`` of the object's team
when the object is shared with that team (visibility ``team`` or ``public``). Viewers read only.
Changing an object's visibility is the owner's alone: sharing is the owner's decision.

Deletion protection
-------------------
Every vector/probe a recipe version references is recorded in ``RecipeVersionRef`` (``PROTECT``
foreign keys): ``delete_vector`` / ``delete_probe`` refuse with a clear message, and the database
refuses any other path (admin, shell) with ``ProtectedError``.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, TypeVar

import pydantic
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Max, Model, ProtectedError, Q, QuerySet
from django.utils.text import slugify

from interventions import probes as probe_io
from interventions import vectors as vector_io
from interventions.compiler import ProbeData, RecipeError, VectorData, compile_recipe, recipe_problems
from interventions.spec import Recipe as RecipeSpec
from interventions.spec import parse_recipe
from webapp.accounts.models import Membership, Role, Team, User
from webapp.accounts.services import role_in
from webapp.library.datasets import ParsedDataset, parse_dataset
from webapp.library.models import (
    PROBE_PREFIX,
    VECTOR_PREFIX,
    Dataset,
    Engine,
    ModelDeployment,
    Owned,
    Point,
    Probe,
    Recipe,
    RecipeVersion,
    RecipeVersionRef,
    SteeringVector,
    Visibility,
)
from webapp.library.uploads import UploadError, parse_probe_upload, parse_vector_upload

log = logging.getLogger(__name__)

OwnedT = TypeVar("OwnedT", bound=Owned)
_ID = re.compile(r"(vec|prb)_([1-9][0-9]{0,17})")
_EDITOR_ROLES = (Role.OWNER, Role.MEMBER)


# --------------------------------------------------------------------------------------------
# Visibility and permissions
# --------------------------------------------------------------------------------------------
def _authenticated(user: Any) -> bool:
    return bool(getattr(user, "is_authenticated", False))


def can_view(user: User | Any, obj: Owned) -> bool:
    """Whether ``user`` may see ``obj`` (see the module docstring)."""
    if obj.visibility == Visibility.PUBLIC:
        return True
    if not _authenticated(user):
        return False
    if obj.owner_id == user.pk:
        return True
    if obj.visibility == Visibility.TEAM and obj.team is not None:
        return role_in(user, obj.team) is not None
    return False


def can_edit(user: User | Any, obj: Owned) -> bool:
    """Whether ``user`` may change ``obj``: its owner, or an owner/member of the team it is shared with."""
    if not _authenticated(user):
        return False
    if obj.owner_id == user.pk:
        return True
    if obj.visibility != Visibility.PRIVATE and obj.team is not None:
        return role_in(user, obj.team) in _EDITOR_ROLES
    return False


def visible_to(user: User | Any, queryset: QuerySet[OwnedT]) -> QuerySet[OwnedT]:
    """The objects of ``queryset`` that ``user`` may see; never someone else's private ones."""
    public = Q(visibility=Visibility.PUBLIC)
    if not _authenticated(user):
        return queryset.filter(public)
    teams = Membership.objects.filter(user=user).values("team_id")
    return queryset.filter(public | Q(owner=user) | Q(visibility=Visibility.TEAM, team_id__in=teams))


def editable_by(user: User | Any, queryset: QuerySet[OwnedT]) -> QuerySet[OwnedT]:
    """The objects of ``queryset`` that ``user`` may change (``can_edit`` as a filter)."""
    if not _authenticated(user):
        return queryset.none()
    teams = Membership.objects.filter(user=user, role__in=_EDITOR_ROLES).values("team_id")
    return queryset.filter(Q(owner=user) | (~Q(visibility=Visibility.PRIVATE) & Q(team_id__in=teams)))


def get_visible(user: User | Any, model: type[OwnedT], pk: int) -> OwnedT:
    """The ``model`` object with this pk if ``user`` may see it, else ``model.DoesNotExist``
    (the same for a missing and a hidden object: a 404 that reveals nothing)."""
    obj: OwnedT = visible_to(user, model._default_manager.all()).get(pk=pk)
    return obj


def _require_view(user: User | Any, obj: Owned, what: str) -> None:
    if not can_view(user, obj):
        raise PermissionDenied(f"You cannot see this {what}.")


def _require_edit(user: User | Any, obj: Owned, what: str) -> None:
    if not can_edit(user, obj):
        raise PermissionDenied(f"You cannot change this {what}.")


def check_sharing(user: User, team: Team | None, visibility: str) -> str:
    """Validate a (team, visibility) choice for an object ``user`` creates or re-shares."""
    try:
        vis = Visibility(visibility)
    except ValueError:
        raise ValidationError(f"Unknown visibility {visibility!r}: use private, team or public.") from None
    if vis == Visibility.TEAM and team is None:
        raise ValidationError("Team visibility needs a team.")
    if team is not None and role_in(user, team) not in _EDITOR_ROLES:
        raise PermissionDenied(f"Only owners and members of {team.name!r} can share objects with it.")
    return vis.value


def set_visibility(user: User, obj: OwnedT, visibility: str, team: Team | None = None) -> OwnedT:
    """The owner changes who can see ``obj`` (``team`` is kept when None and the object has one)."""
    if not _authenticated(user) or obj.owner_id != user.pk:
        raise PermissionDenied("Only the owner can change who can see this.")
    team = team if team is not None else obj.team
    obj.visibility = check_sharing(user, team, visibility)
    obj.team = team
    obj.save(update_fields=["visibility", "team", "updated_at"])
    log.info(
        "library.visibility_changed", extra={"model": type(obj).__name__, "id": obj.pk, "to": visibility}
    )
    return obj


# --------------------------------------------------------------------------------------------
# Deployments
# --------------------------------------------------------------------------------------------
def register_deployment(
    name: str,
    hf_id_or_path: str,
    *,
    revision: str = "",
    engine: str = "hf",
    queue_name: str = "",
) -> ModelDeployment:
    """Register a model: read its config (offline for a local path) and record its shape.

    Registering the same name again with the same source and shape returns the existing row;
    anything else under a taken name is refused (stored vectors are tied to the shape).
    """
    from transformers import AutoConfig

    from interventions.sites import UnsupportedArchitecture, shape_from_config

    if not name or slugify(name) != name:
        raise ValidationError(f"Deployment name {name!r} must be slug-like (lowercase letters, digits, -).")
    try:
        engine = Engine(engine).value
    except ValueError:
        raise ValidationError(f"Unknown engine {engine!r}: use hf or vllm.") from None
    local = Path(hf_id_or_path).expanduser().exists()
    try:
        config = AutoConfig.from_pretrained(
            str(Path(hf_id_or_path).expanduser()) if local else hf_id_or_path,
            revision=revision or None,
            local_files_only=local,
        )
        shape = shape_from_config(config)
    except UnsupportedArchitecture as exc:
        raise ValidationError(str(exc)) from exc
    except (OSError, ValueError) as exc:
        raise ValidationError(f"Cannot read the model config of {hf_id_or_path!r}: {exc}") from exc
    fields = {
        "hf_id_or_path": hf_id_or_path,
        "revision": revision,
        "engine": engine,
        "model_type": shape.model_type,
        "hidden_size": shape.hidden_size,
        "num_layers": shape.num_layers,
        "mlp_size": shape.mlp_size,
        "vocab_size": shape.vocab_size,
        "queue_name": queue_name or f"model.{name}",
    }
    with transaction.atomic():
        existing = ModelDeployment.objects.select_for_update().filter(name=name).first()
        if existing is not None:
            if all(getattr(existing, key) == value for key, value in fields.items()):
                return existing
            raise ValidationError(f"A deployment named {name!r} is already registered with other settings.")
        deployment = ModelDeployment.objects.create(name=name, **fields)
    log.info("library.deployment_registered", extra={"deployment": name, "shape": str(shape)})
    return deployment


# --------------------------------------------------------------------------------------------
# Uploads
# --------------------------------------------------------------------------------------------
def clean_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise ValidationError("A name is required.")
    if len(name) > 100:
        raise ValidationError("The name is too long (100 characters at most).")
    return name


def upload_vector(
    user: User,
    deployment: ModelDeployment,
    name: str,
    filename: str,
    data: bytes,
    *,
    description: str = "",
    layer: int | None = None,
    team: Team | None = None,
    visibility: str = "private",
) -> SteeringVector:
    """Store an uploaded steering vector (safetensors, GGUF or .npy) checked against ``deployment``."""
    vis = check_sharing(user, team, visibility)
    name = clean_name(name)
    try:
        vector = parse_vector_upload(
            data, filename, num_layers=deployment.num_layers, hidden_size=deployment.hidden_size, layer=layer
        )
    except UploadError as exc:
        raise ValidationError(str(exc)) from exc
    provenance: dict[str, Any] = {
        "source": "upload",
        "filename": Path(filename).name,
        "metadata": dict(vector.metadata),
    }
    if vector.model is not None:
        provenance["model_hint"] = vector.model
    obj = save_vector(
        user,
        deployment,
        name,
        vector,
        provenance=provenance,
        description=description,
        team=team,
        visibility=vis,
    )
    log.info("library.vector_uploaded", extra={"id": obj.pk, "user_id": user.pk})
    return obj


def save_vector(
    user: User,
    deployment: ModelDeployment,
    name: str,
    vector: vector_io.SteeringVector,
    *,
    provenance: dict[str, Any],
    description: str = "",
    team: Team | None = None,
    visibility: str = "private",
) -> SteeringVector:
    """Store a checked vector (uploaded, or built by a job) in ``user``'s library."""
    if vector.hidden_size != deployment.hidden_size or max(vector.layers) >= deployment.num_layers:
        raise ValidationError(f"The vector does not fit deployment {deployment.name!r}.")
    return SteeringVector.objects.create(
        owner=user,
        team=team,
        visibility=check_sharing(user, team, visibility),
        deployment=deployment,
        name=clean_name(name),
        description=description,
        method=vector.method,
        provenance=provenance,
        layers=list(vector.layers),
        hidden_size=vector.hidden_size,
        tensors=vector_io.to_safetensors_bytes(vector),
        content_hash=vector.content_hash(),
    )


def upload_probe(
    user: User,
    deployment: ModelDeployment,
    name: str,
    filename: str,
    data: bytes,
    *,
    layer: int,
    point: str = "resid_post",
    description: str = "",
    metrics: dict[str, Any] | None = None,
    team: Team | None = None,
    visibility: str = "private",
) -> Probe:
    """Store an uploaded linear probe (safetensors) for one site of ``deployment``."""
    vis = check_sharing(user, team, visibility)
    name = clean_name(name)
    if point not in Point.values:
        raise ValidationError(f"Unknown point {point!r}: use one of {', '.join(Point.values)}.")
    width = deployment.mlp_size if point == "mlp_act" else deployment.hidden_size
    try:
        probe, absolute = parse_probe_upload(
            data, filename, num_layers=deployment.num_layers, width=width, layer=layer
        )
    except UploadError as exc:
        raise ValidationError(str(exc)) from exc
    obj = save_probe(
        user,
        deployment,
        name,
        probe,
        layer=absolute,
        point=point,
        metrics=metrics or {},
        provenance={"source": "upload", "filename": Path(filename).name},
        description=description,
        team=team,
        visibility=vis,
    )
    log.info("library.probe_uploaded", extra={"id": obj.pk, "user_id": user.pk})
    return obj


def save_probe(
    user: User,
    deployment: ModelDeployment,
    name: str,
    probe: probe_io.LinearProbe,
    *,
    layer: int,
    point: str,
    metrics: dict[str, Any],
    provenance: dict[str, Any],
    description: str = "",
    team: Team | None = None,
    visibility: str = "private",
) -> Probe:
    """Store a checked probe (uploaded, or trained by a job) for one site of ``deployment``."""
    width = deployment.mlp_size if point == "mlp_act" else deployment.hidden_size
    if probe.hidden_size != width or not 0 <= layer < deployment.num_layers:
        raise ValidationError(f"The probe does not fit {point} of layer {layer} of {deployment.name!r}.")
    return Probe.objects.create(
        owner=user,
        team=team,
        visibility=check_sharing(user, team, visibility),
        deployment=deployment,
        name=clean_name(name),
        description=description,
        layer=layer,
        point=point,
        width=probe.hidden_size,
        weight=probe_io.to_safetensors_bytes(probe),
        bias=probe.bias,
        label_names=list(probe.labels),
        metrics=metrics,
        provenance=provenance,
        content_hash=probe.content_hash(),
    )


def upload_dataset(
    user: User,
    name: str,
    filename: str,
    data: bytes,
    *,
    kind: str | None = None,
    description: str = "",
    team: Team | None = None,
    visibility: str = "private",
) -> Dataset:
    """Store an uploaded CSV/JSONL dataset (labelled prompts or contrastive pairs)."""
    check_sharing(user, team, visibility)  # sharing and name are refused before the file is read
    clean_name(name)
    try:
        parsed = parse_dataset(data, filename, kind=kind)
    except UploadError as exc:
        raise ValidationError(str(exc)) from exc
    obj = _save_dataset(
        user,
        name,
        parsed,
        {"source": "upload", "filename": Path(filename).name},
        description=description,
        team=team,
        visibility=visibility,
    )
    log.info("library.dataset_uploaded", extra={"id": obj.pk, "user_id": user.pk})
    return obj


def _save_dataset(
    user: User,
    name: str,
    parsed: ParsedDataset,
    provenance: dict[str, Any],
    *,
    description: str,
    team: Team | None,
    visibility: str,
) -> Dataset:
    return Dataset.objects.create(
        owner=user,
        team=team,
        visibility=check_sharing(user, team, visibility),
        name=clean_name(name),
        description=description,
        kind=parsed.kind,
        rows=parsed.rows,
        row_count=len(parsed.rows),
        content_hash=parsed.content_hash,
        provenance=provenance,
    )


def _rows_as_jsonl(rows: Any) -> bytes:
    if not isinstance(rows, list):
        raise ValidationError({"rows": ["a list of row objects"]})
    return "\n".join(json.dumps(row, ensure_ascii=False) for row in rows).encode()


def create_dataset_rows(
    user: User,
    name: str,
    kind: str,
    rows: Any,
    *,
    description: str = "",
    team: Team | None = None,
    visibility: str = "private",
) -> Dataset:
    """Store a dataset written in the browser's editor (validated exactly like an upload)."""
    check_sharing(user, team, visibility)  # sharing and name are refused before the rows are read
    clean_name(name)
    parsed = _parse_rows(rows, kind)
    return _save_dataset(
        user, name, parsed, {"source": "editor"}, description=description, team=team, visibility=visibility
    )


def _parse_rows(rows: Any, kind: str) -> ParsedDataset:
    try:
        return parse_dataset(_rows_as_jsonl(rows), "rows.jsonl", kind=kind)
    except UploadError as exc:
        raise ValidationError({"rows": [str(exc)]}) from exc


def replace_dataset_rows(user: User, dataset: Dataset, rows: Any) -> Dataset:
    """Replace a dataset's rows (editors). Jobs and boards pinned the old content hash: a job that
    has not finished fails rather than mix the two versions; a board's next evaluation uses these."""
    _require_edit(user, dataset, "dataset")
    parsed = _parse_rows(rows, dataset.kind)
    dataset.rows = parsed.rows
    dataset.row_count = len(parsed.rows)
    dataset.content_hash = parsed.content_hash
    dataset.save(update_fields=["rows", "row_count", "content_hash", "updated_at"])
    return dataset


# --------------------------------------------------------------------------------------------
# Stored tensors -> the planner's resolved data
# --------------------------------------------------------------------------------------------
def load_vector(obj: SteeringVector) -> vector_io.SteeringVector:
    """The stored vector's tensors (safetensors bytes, never unpickled)."""
    return vector_io.from_safetensors_bytes(bytes(obj.tensors))


def load_probe(obj: Probe) -> probe_io.LinearProbe:
    """The stored probe (safetensors bytes, never unpickled)."""
    return probe_io.from_safetensors_bytes(bytes(obj.weight))


def vector_norms(obj: SteeringVector) -> dict[str, float]:
    """Layer -> the L2 norm of the stored direction (what a vector's detail shows per layer)."""
    directions = load_vector(obj).directions
    return {str(layer): round(float(directions[layer].float().norm()), 6) for layer in sorted(directions)}


def vector_data(obj: SteeringVector) -> VectorData:
    return VectorData.of(dict(load_vector(obj).directions), model=obj.deployment.name)


def probe_data(obj: Probe) -> ProbeData:
    probe = load_probe(obj)
    return ProbeData.of(probe.weight, probe.bias, model=obj.deployment.name)


# --------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------
def library_id(ref: str) -> tuple[str, int] | None:
    """``("vector", pk)`` for ``vec_<pk>``, ``("probe", pk)`` for ``prb_<pk>``; None for anything else."""
    match = _ID.fullmatch(ref)
    if match is None:
        return None
    return ("vector" if match.group(1) == "vec" else "probe"), int(match.group(2))


def spec_refs(spec: RecipeSpec) -> list[tuple[str, str, str]]:
    """Every (path, kind, id) the spec references, kind being ``vector`` or ``probe``."""
    out: list[tuple[str, str, str]] = []
    for i, item in enumerate(spec.interventions):
        at = f"interventions[{i}]"
        for attr, kind in (
            ("vector", "vector"),
            ("mean", "vector"),
            ("direction", "vector"),
            ("probe", "probe"),
        ):
            value = getattr(item, attr, None)
            if isinstance(value, str):
                out.append((f"{at}.{attr}", kind, value))
        gate = getattr(item, "when", None)
        if gate is not None:
            out.append((f"{at}.when.probe", "probe", gate.probe))
    return out


def _pydantic_errors(exc: pydantic.ValidationError) -> ValidationError:
    errors: dict[str, list[str]] = {}
    for error in exc.errors():
        path = (
            "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"]).lstrip(".") or "spec"
        )
        errors.setdefault(path, []).append(error["msg"])
    return ValidationError(errors)


def _resolve_refs(
    user: User, deployment: ModelDeployment, spec: RecipeSpec
) -> tuple[dict[str, VectorData | ProbeData], dict[str, SteeringVector | Probe]]:
    errors: dict[str, list[str]] = {}
    objects: dict[str, SteeringVector | Probe] = {}
    for path, kind, ref in spec_refs(spec):
        found: SteeringVector | Probe | None = objects.get(ref)
        if found is None:
            parsed = library_id(ref)
            if parsed is None or parsed[0] != kind:
                prefix = VECTOR_PREFIX if kind == "vector" else PROBE_PREFIX
                errors.setdefault(path, []).append(
                    f"{ref!r} is not a {kind} id: {kind}s are referenced as {prefix}<id>"
                )
                continue
            model: type[SteeringVector] | type[Probe] = SteeringVector if kind == "vector" else Probe
            found = visible_to(user, model.objects.select_related("deployment")).filter(pk=parsed[1]).first()
            if found is None:
                # Unknown and not-yours read the same: an id reveals nothing about others' objects.
                errors.setdefault(path, []).append(f"no {kind} {ref!r} that you can see")
                continue
        if found.deployment_id != deployment.pk:
            errors.setdefault(path, []).append(
                f"{kind} {ref!r} belongs to deployment {found.deployment.name!r}, not {deployment.name!r}"
            )
            continue
        objects[ref] = found
    if errors:
        raise ValidationError(errors)
    resolved: dict[str, VectorData | ProbeData] = {
        ref: vector_data(obj) if isinstance(obj, SteeringVector) else probe_data(obj)
        for ref, obj in objects.items()
    }
    return resolved, objects


def validate_recipe_spec(
    user: User, deployment: ModelDeployment, spec_json: str | bytes | dict[str, Any]
) -> tuple[RecipeSpec, dict[str, SteeringVector | Probe]]:
    """Parse, resolve and compile a recipe spec for ``user`` on ``deployment``.

    Raises:
        ValidationError: keyed by the intervention path (``interventions[2].vector``).
    """
    try:
        spec = parse_recipe(spec_json)
    except pydantic.ValidationError as exc:
        raise _pydantic_errors(exc) from exc
    resolved, objects = _resolve_refs(user, deployment, spec)
    try:
        compile_recipe(spec, deployment.shape, resolved, model=deployment.name)
    except RecipeError as exc:
        # Compiling stops at the first problem; an editor shows every intervention's at its field.
        errors: dict[str, list[str]] = {}
        for message in recipe_problems(spec, deployment.shape, resolved, model=deployment.name) or [str(exc)]:
            path, sep, rest = message.partition(": ")
            if sep and path.startswith("interventions["):
                errors.setdefault(path, []).append(rest)
            else:
                errors.setdefault("spec", []).append(message)
        raise ValidationError(errors) from exc
    return spec, objects


def _write_version(user: User, recipe: Recipe, spec_json: str | bytes | dict[str, Any]) -> RecipeVersion:
    spec, objects = validate_recipe_spec(user, recipe.deployment, spec_json)
    Recipe.objects.select_for_update().filter(pk=recipe.pk).first()
    number = (recipe.versions.aggregate(n=Max("number"))["n"] or 0) + 1
    version = RecipeVersion.objects.create(
        recipe=recipe,
        number=number,
        spec=spec.model_dump(mode="json"),
        content_hashes={ref: obj.content_hash for ref, obj in sorted(objects.items())},
        created_by=user,
    )
    RecipeVersionRef.objects.bulk_create(
        [
            RecipeVersionRef(
                version=version,
                ref=ref,
                vector=obj if isinstance(obj, SteeringVector) else None,
                probe=obj if isinstance(obj, Probe) else None,
            )
            for ref, obj in sorted(objects.items())
        ]
    )
    recipe.save(update_fields=["updated_at"])
    log.info("library.recipe_version_created", extra={"recipe_id": recipe.pk, "number": number})
    return version


@transaction.atomic
def create_recipe(
    user: User,
    deployment: ModelDeployment,
    name: str,
    spec_json: str | bytes | dict[str, Any],
    *,
    description: str = "",
    team: Team | None = None,
    visibility: str = "private",
) -> tuple[Recipe, RecipeVersion]:
    """Create a recipe with its version 1; nothing is written when the spec is invalid."""
    vis = check_sharing(user, team, visibility)
    recipe = Recipe.objects.create(
        owner=user,
        team=team,
        visibility=vis,
        deployment=deployment,
        name=clean_name(name),
        description=description,
    )
    return recipe, _write_version(user, recipe, spec_json)


@transaction.atomic
def create_recipe_version(
    user: User, recipe: Recipe, spec_json: str | bytes | dict[str, Any]
) -> RecipeVersion:
    """Add the next version of ``recipe`` (editing a recipe never changes an existing version)."""
    _require_edit(user, recipe, "recipe")
    return _write_version(user, recipe, spec_json)


# --------------------------------------------------------------------------------------------
# Forks
# --------------------------------------------------------------------------------------------
def _fork_provenance(source: SteeringVector | Probe | Dataset, public_id: str) -> dict[str, Any]:
    return {
        **source.provenance,
        "forked_from": {
            "id": public_id,
            "owner": source.owner.get_username(),
            "content_hash": source.content_hash,
            "name": source.name,
        },
    }


@transaction.atomic
def fork_recipe(
    user: User,
    version: RecipeVersion,
    *,
    name: str | None = None,
    team: Team | None = None,
    visibility: str = "private",
) -> tuple[Recipe, RecipeVersion]:
    """Copy a recipe version into a new recipe of ``user``'s (re-validated for the new author)."""
    source = version.recipe
    _require_view(user, source, "recipe")
    vis = check_sharing(user, team, visibility)
    recipe = Recipe.objects.create(
        owner=user,
        team=team,
        visibility=vis,
        deployment=source.deployment,
        name=clean_name(name or f"{source.name} (fork)"),
        description=source.description,
        forked_from_version=version,
    )
    return recipe, _write_version(user, recipe, version.spec)


def _copy(value: Any) -> Any:
    # Fresh containers and plain bytes: a fork never shares mutable state (or a memoryview from
    # the database driver) with its source.
    if isinstance(value, (bytes, memoryview)):
        return bytes(value)
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    return value


_FORK_FIELDS: dict[type[Owned], tuple[str, ...]] = {
    SteeringVector: (
        "deployment",
        "description",
        "method",
        "layers",
        "hidden_size",
        "tensors",
        "content_hash",
    ),
    Probe: (
        "deployment",
        "description",
        "layer",
        "point",
        "width",
        "weight",
        "bias",
        "label_names",
        "metrics",
        "content_hash",
    ),
    Dataset: ("description", "kind", "rows", "row_count", "content_hash"),
}


def _fork(
    user: User,
    source: OwnedT,
    what: str,
    public_id: str,
    name: str | None,
    team: Team | None,
    visibility: str,
) -> OwnedT:
    """Copy a visible object into ``user``'s library; ``forked_from`` and provenance say where from."""
    _require_view(user, source, what)
    vis = check_sharing(user, team, visibility)
    fields = {f: _copy(getattr(source, f)) for f in _FORK_FIELDS[type(source)]}
    fork: OwnedT = type(source)._default_manager.create(
        owner=user,
        team=team,
        visibility=vis,
        name=clean_name(name or f"{source.name} (fork)"),
        provenance=_fork_provenance(source, public_id),  # type: ignore[arg-type]
        forked_from=source,
        **fields,
    )
    return fork


def fork_vector(
    user: User,
    vector: SteeringVector,
    *,
    name: str | None = None,
    team: Team | None = None,
    visibility: str = "private",
) -> SteeringVector:
    """Copy a visible vector into ``user``'s library; ``forked_from`` and provenance say where from."""
    return _fork(user, vector, "vector", vector.public_id, name, team, visibility)


def fork_probe(
    user: User,
    probe: Probe,
    *,
    name: str | None = None,
    team: Team | None = None,
    visibility: str = "private",
) -> Probe:
    """Copy a visible probe into ``user``'s library; ``forked_from`` and provenance say where from."""
    return _fork(user, probe, "probe", probe.public_id, name, team, visibility)


def fork_dataset(
    user: User,
    dataset: Dataset,
    *,
    name: str | None = None,
    team: Team | None = None,
    visibility: str = "private",
) -> Dataset:
    """Copy a visible dataset into ``user``'s library."""
    return _fork(user, dataset, "dataset", f"dataset_{dataset.pk}", name, team, visibility)


# --------------------------------------------------------------------------------------------
# Deletion
# --------------------------------------------------------------------------------------------
def _delete_referenced(user: User, obj: SteeringVector | Probe, what: str) -> None:
    _require_edit(user, obj, what)
    with transaction.atomic():
        count = RecipeVersionRef.objects.filter(**{what: obj}).values("version_id").distinct().count()
        if count:
            raise ValidationError(
                f"{what.capitalize()} {obj.public_id} is used by {count} recipe version(s) and cannot be "
                "deleted: recipe versions are immutable and must keep working. Make it private instead."
            )
        try:
            obj.delete()
        except ProtectedError:  # a version referencing it was written concurrently
            raise ValidationError(
                f"{what.capitalize()} {obj.public_id} is used by a recipe version and cannot be deleted."
            ) from None
    log.info(f"library.{what}_deleted", extra={"id": obj.pk, "user_id": user.pk})


def delete_vector(user: User, vector: SteeringVector) -> None:
    """Delete a vector; refused while any recipe version references it."""
    _delete_referenced(user, vector, "vector")


def delete_probe(user: User, probe: Probe) -> None:
    """Delete a probe; refused while any recipe version references it."""
    _delete_referenced(user, probe, "probe")


def delete_recipe(user: User, recipe: Recipe) -> None:
    """Delete a recipe and its versions; refused while a conversation or run uses one of them."""
    _require_edit(user, recipe, "recipe")
    try:
        with transaction.atomic():
            recipe.delete()
    except ProtectedError:  # Conversation/Run.recipe_version are PROTECT: runs must stay replayable
        raise ValidationError(
            f"Recipe {recipe.name!r} is used by conversations or runs and cannot be deleted: their runs "
            "must stay replayable. Make it private instead."
        ) from None
    log.info("library.recipe_deleted", extra={"id": recipe.pk, "user_id": user.pk})


def delete_dataset(user: User, dataset: Dataset) -> None:
    """Delete a dataset; refused while a comparison board evaluates on it."""
    _require_edit(user, dataset, "dataset")
    try:
        with transaction.atomic():
            dataset.delete()
    except ProtectedError:  # Board.dataset is PROTECT: a board's results must stay explainable
        raise ValidationError(
            f"Dataset {dataset.name!r} is the evaluation set of a comparison board and cannot be deleted."
        ) from None


def public_id(obj: Model) -> str:
    """The recipe id of a vector or probe."""
    if isinstance(obj, (SteeringVector, Probe)):
        return obj.public_id
    raise TypeError(f"{type(obj).__name__} has no recipe id")


# --------------------------------------------------------------------------------------------
# Lookups and edits for the API
# --------------------------------------------------------------------------------------------
def deployment_named(name: str) -> ModelDeployment:
    """The deployment called ``name``; an unknown name is a ``ValidationError`` (a bad form field)."""
    # A NUL cannot be in a name, and PostgreSQL refuses it even in a query: it names nothing.
    deployment = None if "\x00" in name else ModelDeployment.objects.filter(name=name).first()
    if deployment is None:
        raise ValidationError(f"Unknown deployment {name!r}.")
    return deployment


def update_details(
    user: User,
    obj: OwnedT,
    *,
    description: str | None = None,
    visibility: str | None = None,
    team: Team | None = None,
) -> OwnedT:
    """Change ``obj``'s description (editors) and/or who can see it (the owner alone), atomically."""
    with transaction.atomic():
        if description is not None:
            _require_edit(user, obj, type(obj).__name__.lower())
            obj.description = description  # type: ignore[attr-defined]
            obj.save(update_fields=["description", "updated_at"])
        if visibility is not None or team is not None:
            obj = set_visibility(user, obj, visibility or obj.visibility, team)
    return obj
