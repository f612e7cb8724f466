"""Library endpoints: deployments, steering vectors, probes, datasets, recipes and their versions.

Thin: look the object up through ``services.get_visible`` (a missing or hidden object is a 404),
call one service, serialise metadata. Tensor bytes are never put in JSON: a vector or probe is
described by its layers, width and content hash. Permission checks live in
``webapp.library.services`` (an edit the user may not make, on an object they can see, is a 403).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest
from ninja import File, Form, Router, Schema, Status, UploadedFile
from ninja.pagination import paginate

from webapp.accounts.models import Team, User
from webapp.accounts.services import visible_team
from webapp.api.pagination import BoundedLimitOffsetPagination
from webapp.library import services
from webapp.library.models import (
    Dataset,
    DatasetKind,
    ModelDeployment,
    Point,
    Probe,
    Recipe,
    RecipeVersion,
    SteeringVector,
    Visibility,
)
from webapp.library.services import OwnedT

MAX_SEARCH_WORDS = 8

router = Router(tags=["library"])


# --------------------------------------------------------------------------------------------
# Schemas
# --------------------------------------------------------------------------------------------
class DetailOut(Schema):
    detail: str
    errors: dict[str, list[str]] | None = None  # a recipe's messages by field path, when keyed


DENIED = {400: DetailOut, 403: DetailOut, 404: DetailOut}


class DeploymentOut(Schema):
    id: int
    name: str
    hf_id_or_path: str
    revision: str
    engine: str
    model_type: str
    hidden_size: int
    num_layers: int
    mlp_size: int
    vocab_size: int


class OwnedOut(Schema):
    id: int
    name: str
    description: str
    owner: str
    team_id: int | None
    visibility: Visibility
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def resolve_owner(obj: Any) -> str:
        return str(obj.owner.get_username())


class VectorOut(OwnedOut):
    public_id: str
    deployment: str
    method: str
    layers: list[int]
    hidden_size: int
    content_hash: str
    provenance: dict[str, Any]
    forked_from_id: int | None

    @staticmethod
    def resolve_deployment(obj: SteeringVector) -> str:
        return obj.deployment.name


class VectorDetailOut(VectorOut):
    norms: dict[str, float]  # layer -> L2 norm of its direction (the detail page's chart)

    @staticmethod
    def resolve_norms(obj: SteeringVector) -> dict[str, float]:
        return services.vector_norms(obj)


class ProbeOut(OwnedOut):
    public_id: str
    deployment: str
    layer: int
    point: Point
    width: int
    bias: float
    label_names: list[str]
    metrics: dict[str, Any]
    content_hash: str
    provenance: dict[str, Any]
    forked_from_id: int | None

    @staticmethod
    def resolve_deployment(obj: Probe) -> str:
        return obj.deployment.name


class DatasetOut(OwnedOut):
    kind: DatasetKind
    row_count: int
    content_hash: str
    provenance: dict[str, Any]
    forked_from_id: int | None


class RecipeOut(OwnedOut):
    deployment: str
    forked_from_version_id: int | None
    latest_version: int | None

    @staticmethod
    def resolve_deployment(obj: Recipe) -> str:
        return obj.deployment.name

    @staticmethod
    def resolve_latest_version(obj: Recipe) -> int | None:
        version = obj.latest_version()
        return version.number if version is not None else None


class RecipeVersionOut(Schema):
    recipe_id: int
    number: int
    spec: dict[str, Any]
    content_hashes: dict[str, str]
    created_by: str
    created_at: datetime

    @staticmethod
    def resolve_created_by(obj: RecipeVersion) -> str:
        return str(obj.created_by.get_username())


class DetailsIn(Schema):
    description: str | None = None
    visibility: Visibility | None = None
    team: int | None = None


class ForkIn(Schema):
    name: str | None = None
    visibility: Visibility = Visibility.PRIVATE
    team: int | None = None


class RecipeIn(Schema):
    deployment: str
    name: str
    spec: dict[str, Any]
    description: str = ""
    visibility: Visibility = Visibility.PRIVATE
    team: int | None = None


class VersionIn(Schema):
    spec: dict[str, Any]


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def _user(request: HttpRequest) -> User:
    user: User = request.auth  # type: ignore[attr-defined]
    return user


def _team(user: User, team_id: int | None) -> Team | None:
    return visible_team(user, team_id) if team_id is not None else None


def _visible(
    request: HttpRequest, model: Any, queryset_filter: dict[str, Any] | None = None
) -> QuerySet[Any]:
    queryset = model.objects.select_related("owner")
    return services.visible_to(_user(request), queryset.filter(**(queryset_filter or {})))


def _by_deployment(deployment: str | None) -> dict[str, Any]:
    return {"deployment__name": deployment} if deployment else {}


def _search(queryset: QuerySet[Any], q: str | None) -> QuerySet[Any]:
    """``q``: words that the name must all contain (any case, any order)."""
    for word in (q or "").split()[:MAX_SEARCH_WORDS]:
        queryset = queryset.filter(name__icontains=word)
    return queryset


# --------------------------------------------------------------------------------------------
# Deployments
# --------------------------------------------------------------------------------------------
@router.get("/deployments", response=list[DeploymentOut])
@paginate(BoundedLimitOffsetPagination)
def list_deployments(request: HttpRequest) -> QuerySet[ModelDeployment]:
    return ModelDeployment.objects.all()


# --------------------------------------------------------------------------------------------
# Vectors
# --------------------------------------------------------------------------------------------
@router.get("/vectors", response=list[VectorOut])
@paginate(BoundedLimitOffsetPagination)
def list_vectors(request: HttpRequest, deployment: str | None = None, q: str | None = None) -> QuerySet[Any]:
    return _search(_visible(request, SteeringVector, _by_deployment(deployment)), q).select_related(
        "deployment"
    )


@router.get("/vectors/{vector_id}", response={200: VectorDetailOut, 404: DetailOut})
def get_vector(request: HttpRequest, vector_id: int) -> SteeringVector:
    return services.get_visible(_user(request), SteeringVector, vector_id)


def _update_details(request: HttpRequest, model: type[OwnedT], pk: int, payload: DetailsIn) -> OwnedT:
    """PATCH of a vector, probe, dataset or recipe: description, visibility and team."""
    user = _user(request)
    return services.update_details(
        user,
        services.get_visible(user, model, pk),
        description=payload.description,
        visibility=payload.visibility,
        team=_team(user, payload.team),
    )


@router.post("/vectors", response={201: VectorOut, **DENIED})
def upload_vector(
    request: HttpRequest,
    file: File[UploadedFile],
    deployment: Form[str],
    name: Form[str],
    description: Form[str] = "",
    layer: Form[int | None] = None,
    visibility: Form[Visibility] = Visibility.PRIVATE,
    team: Form[int | None] = None,
) -> Status[object]:
    user = _user(request)
    obj = services.upload_vector(
        user,
        services.deployment_named(deployment),
        name,
        file.name or "",
        file.read(),
        description=description,
        layer=layer,
        team=_team(user, team),
        visibility=visibility,
    )
    return Status(201, obj)


@router.patch("/vectors/{vector_id}", response={200: VectorOut, **DENIED})
def update_vector(request: HttpRequest, vector_id: int, payload: DetailsIn) -> SteeringVector:
    return _update_details(request, SteeringVector, vector_id, payload)


@router.delete("/vectors/{vector_id}", response={204: None, **DENIED})
def delete_vector(request: HttpRequest, vector_id: int) -> Status[object]:
    user = _user(request)
    services.delete_vector(user, services.get_visible(user, SteeringVector, vector_id))
    return Status(204, None)


@router.post("/vectors/{vector_id}/fork", response={201: VectorOut, **DENIED})
def fork_vector(request: HttpRequest, vector_id: int, payload: ForkIn) -> Status[object]:
    user = _user(request)
    source = services.get_visible(user, SteeringVector, vector_id)
    obj = services.fork_vector(
        user, source, name=payload.name, team=_team(user, payload.team), visibility=payload.visibility
    )
    return Status(201, obj)


# --------------------------------------------------------------------------------------------
# Probes
# --------------------------------------------------------------------------------------------
@router.get("/probes", response=list[ProbeOut])
@paginate(BoundedLimitOffsetPagination)
def list_probes(request: HttpRequest, deployment: str | None = None, q: str | None = None) -> QuerySet[Any]:
    return _search(_visible(request, Probe, _by_deployment(deployment)), q).select_related("deployment")


@router.get("/probes/{probe_id}", response={200: ProbeOut, 404: DetailOut})
def get_probe(request: HttpRequest, probe_id: int) -> Probe:
    return services.get_visible(_user(request), Probe, probe_id)


@router.post("/probes", response={201: ProbeOut, **DENIED})
def upload_probe(
    request: HttpRequest,
    file: File[UploadedFile],
    deployment: Form[str],
    name: Form[str],
    layer: Form[int],
    point: Form[Point] = Point.RESID_POST,
    description: Form[str] = "",
    visibility: Form[Visibility] = Visibility.PRIVATE,
    team: Form[int | None] = None,
) -> Status[object]:
    user = _user(request)
    obj = services.upload_probe(
        user,
        services.deployment_named(deployment),
        name,
        file.name or "",
        file.read(),
        layer=layer,
        point=point,
        description=description,
        team=_team(user, team),
        visibility=visibility,
    )
    return Status(201, obj)


@router.patch("/probes/{probe_id}", response={200: ProbeOut, **DENIED})
def update_probe(request: HttpRequest, probe_id: int, payload: DetailsIn) -> Probe:
    return _update_details(request, Probe, probe_id, payload)


@router.delete("/probes/{probe_id}", response={204: None, **DENIED})
def delete_probe(request: HttpRequest, probe_id: int) -> Status[object]:
    user = _user(request)
    services.delete_probe(user, services.get_visible(user, Probe, probe_id))
    return Status(204, None)


@router.post("/probes/{probe_id}/fork", response={201: ProbeOut, **DENIED})
def fork_probe(request: HttpRequest, probe_id: int, payload: ForkIn) -> Status[object]:
    user = _user(request)
    source = services.get_visible(user, Probe, probe_id)
    obj = services.fork_probe(
        user, source, name=payload.name, team=_team(user, payload.team), visibility=payload.visibility
    )
    return Status(201, obj)


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------
@router.get("/datasets", response=list[DatasetOut])
@paginate(BoundedLimitOffsetPagination)
def list_datasets(request: HttpRequest, q: str | None = None) -> QuerySet[Any]:
    return _search(_visible(request, Dataset), q)


class DatasetRowsIn(Schema):
    name: str
    kind: DatasetKind
    rows: list[dict[str, Any]]
    description: str = ""
    visibility: Visibility = Visibility.PRIVATE
    team: int | None = None


class RowsIn(Schema):
    rows: list[dict[str, Any]]


class RowsOut(Schema):
    kind: DatasetKind
    rows: list[dict[str, str]]
    labels: list[str]  # a labelled dataset's distinct labels (sorted); [] for contrastive pairs


@router.post("/datasets/rows", response={201: DatasetOut, **DENIED})
def create_dataset_rows(request: HttpRequest, payload: DatasetRowsIn) -> Status[object]:
    """A dataset written in the editor (the same checks as an upload)."""
    user = _user(request)
    obj = services.create_dataset_rows(
        user,
        payload.name,
        payload.kind,
        payload.rows,
        description=payload.description,
        team=_team(user, payload.team),
        visibility=payload.visibility,
    )
    return Status(201, obj)


@router.get("/datasets/{dataset_id}", response={200: DatasetOut, 404: DetailOut})
def get_dataset(request: HttpRequest, dataset_id: int) -> Dataset:
    return services.get_visible(_user(request), Dataset, dataset_id)


@router.post("/datasets", response={201: DatasetOut, **DENIED})
def upload_dataset(
    request: HttpRequest,
    file: File[UploadedFile],
    name: Form[str],
    kind: Form[DatasetKind | None] = None,
    description: Form[str] = "",
    visibility: Form[Visibility] = Visibility.PRIVATE,
    team: Form[int | None] = None,
) -> Status[object]:
    user = _user(request)
    obj = services.upload_dataset(
        user,
        name,
        file.name or "",
        file.read(),
        kind=kind,
        description=description,
        team=_team(user, team),
        visibility=visibility,
    )
    return Status(201, obj)


def _rows(dataset: Dataset) -> dict[str, Any]:
    labels = sorted({r["label"] for r in dataset.rows}) if dataset.kind == DatasetKind.LABELLED else []
    return {"kind": dataset.kind, "rows": dataset.rows, "labels": labels}


@router.get("/datasets/{dataset_id}/rows", response={200: RowsOut, 404: DetailOut})
def get_dataset_rows(request: HttpRequest, dataset_id: int) -> dict[str, Any]:
    return _rows(services.get_visible(_user(request), Dataset, dataset_id))


@router.put("/datasets/{dataset_id}/rows", response={200: RowsOut, **DENIED})
def replace_dataset_rows(request: HttpRequest, dataset_id: int, payload: RowsIn) -> dict[str, Any]:
    user = _user(request)
    dataset = services.get_visible(user, Dataset, dataset_id)
    return _rows(services.replace_dataset_rows(user, dataset, payload.rows))


@router.patch("/datasets/{dataset_id}", response={200: DatasetOut, **DENIED})
def update_dataset(request: HttpRequest, dataset_id: int, payload: DetailsIn) -> Dataset:
    return _update_details(request, Dataset, dataset_id, payload)


@router.delete("/datasets/{dataset_id}", response={204: None, **DENIED})
def delete_dataset(request: HttpRequest, dataset_id: int) -> Status[object]:
    user = _user(request)
    services.delete_dataset(user, services.get_visible(user, Dataset, dataset_id))
    return Status(204, None)


@router.post("/datasets/{dataset_id}/fork", response={201: DatasetOut, **DENIED})
def fork_dataset(request: HttpRequest, dataset_id: int, payload: ForkIn) -> Status[object]:
    user = _user(request)
    source = services.get_visible(user, Dataset, dataset_id)
    obj = services.fork_dataset(
        user, source, name=payload.name, team=_team(user, payload.team), visibility=payload.visibility
    )
    return Status(201, obj)


# --------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------
@router.get("/recipes", response=list[RecipeOut])
@paginate(BoundedLimitOffsetPagination)
def list_recipes(request: HttpRequest, deployment: str | None = None, q: str | None = None) -> QuerySet[Any]:
    return _search(_visible(request, Recipe, _by_deployment(deployment)), q).select_related("deployment")


@router.post("/recipes", response={201: RecipeOut, **DENIED})
def create_recipe(request: HttpRequest, payload: RecipeIn) -> Status[object]:
    user = _user(request)
    recipe, _ = services.create_recipe(
        user,
        services.deployment_named(payload.deployment),
        payload.name,
        payload.spec,
        description=payload.description,
        team=_team(user, payload.team),
        visibility=payload.visibility,
    )
    return Status(201, recipe)


@router.get("/recipes/{recipe_id}", response={200: RecipeOut, 404: DetailOut})
def get_recipe(request: HttpRequest, recipe_id: int) -> Recipe:
    return services.get_visible(_user(request), Recipe, recipe_id)


@router.patch("/recipes/{recipe_id}", response={200: RecipeOut, **DENIED})
def update_recipe(request: HttpRequest, recipe_id: int, payload: DetailsIn) -> Recipe:
    return _update_details(request, Recipe, recipe_id, payload)


@router.delete("/recipes/{recipe_id}", response={204: None, **DENIED})
def delete_recipe(request: HttpRequest, recipe_id: int) -> Status[object]:
    user = _user(request)
    services.delete_recipe(user, services.get_visible(user, Recipe, recipe_id))
    return Status(204, None)


@router.post("/recipes/{recipe_id}/versions", response={201: RecipeVersionOut, **DENIED})
def create_recipe_version(request: HttpRequest, recipe_id: int, payload: VersionIn) -> Status[object]:
    user = _user(request)
    recipe = services.get_visible(user, Recipe, recipe_id)
    return Status(201, services.create_recipe_version(user, recipe, payload.spec))


@router.get("/recipes/{recipe_id}/versions/{number}", response={200: RecipeVersionOut, 404: DetailOut})
def get_recipe_version(request: HttpRequest, recipe_id: int, number: int) -> RecipeVersion:
    recipe = services.get_visible(_user(request), Recipe, recipe_id)
    return recipe.versions.get(number=number)


@router.post("/recipes/{recipe_id}/versions/{number}/fork", response={201: RecipeOut, **DENIED})
def fork_recipe(request: HttpRequest, recipe_id: int, number: int, payload: ForkIn) -> Status[object]:
    user = _user(request)
    version = services.get_visible(user, Recipe, recipe_id).versions.get(number=number)
    recipe, _ = services.fork_recipe(
        user, version, name=payload.name, team=_team(user, payload.team), visibility=payload.visibility
    )
    return Status(201, recipe)
