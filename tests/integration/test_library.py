"""The library against the database: visibility, uploads, versioned recipes, forks, deletion."""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from typing import Any

import pytest
import torch
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management import call_command
from django.db.models import ProtectedError

from interventions.probes import LinearProbe
from interventions.probes import to_safetensors_bytes as probe_bytes
from interventions.tiny import build_tiny
from interventions.vectors import SteeringVector as Vec
from interventions.vectors import to_safetensors_bytes
from webapp.accounts.models import Membership, Role, Team, User
from webapp.library import services
from webapp.library.models import (
    ImmutableError,
    ModelDeployment,
    Probe,
    Recipe,
    RecipeVersion,
    RecipeVersionRef,
    SteeringVector,
    Visibility,
)

HIDDEN, LAYERS = 64, 4
pytestmark = pytest.mark.django_db


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture
def dave(make_user: Callable[..., User], team_t: Team) -> User:
    """A viewer of team T."""
    user = make_user("dave")
    Membership.objects.create(team=team_t, user=user, role=Role.VIEWER)
    return user


@pytest.fixture
def tiny() -> ModelDeployment:
    return services.register_deployment("tiny", str(build_tiny()))


@pytest.fixture
def other_deployment() -> ModelDeployment:
    return ModelDeployment.objects.create(
        name="other",
        hf_id_or_path="/nowhere",
        engine="hf",
        model_type="llama",
        hidden_size=HIDDEN,
        num_layers=LAYERS,
        mlp_size=128,
        vocab_size=512,
        queue_name="model.other",
    )


def _vector_file(layers: tuple[int, ...] = (1,), hidden: int = HIDDEN, seed: int = 0) -> bytes:
    g = torch.Generator().manual_seed(seed)
    return to_safetensors_bytes(Vec({layer: torch.randn(hidden, generator=g) for layer in layers}))


def _probe_file(hidden: int = HIDDEN) -> bytes:
    return probe_bytes(LinearProbe(torch.randn(hidden, generator=torch.Generator().manual_seed(3)), 0.5))


def _vector(
    user: User,
    deployment: ModelDeployment,
    team: Team | None = None,
    visibility: str = Visibility.PRIVATE,
    **kw: Any,
) -> SteeringVector:
    return services.upload_vector(
        user, deployment, "v", "v.safetensors", _vector_file(), team=team, visibility=visibility, **kw
    )


def _steer(ref: str, layer: int = 1) -> dict[str, Any]:
    return {"interventions": [{"op": "steer", "layer": layer, "vector": ref, "scale": 2.0}]}


# ----------------------------------------------------------------------------- visibility matrix
def test_visibility_matrix(
    alice: User, bob: User, carol: User, dave: User, team_t: Team, tiny: ModelDeployment
) -> None:
    objs = {vis: _vector(alice, tiny, team_t if vis != "private" else None, vis) for vis in Visibility.values}
    # (user, visibility) -> (can_view, can_edit)
    expected = {
        (alice, "private"): (True, True),
        (alice, "team"): (True, True),
        (alice, "public"): (True, True),
        (bob, "private"): (False, False),
        (bob, "team"): (True, True),
        (bob, "public"): (True, True),
        (dave, "private"): (False, False),
        (dave, "team"): (True, False),
        (dave, "public"): (True, False),
        (carol, "private"): (False, False),
        (carol, "team"): (False, False),
        (carol, "public"): (True, False),
    }
    for (user, vis), (view, edit) in expected.items():
        assert services.can_view(user, objs[vis]) is view, (user.username, vis)
        assert services.can_edit(user, objs[vis]) is edit, (user.username, vis)
    listed = {
        user.username: set(
            services.visible_to(user, SteeringVector.objects.all()).values_list("visibility", flat=True)
        )
        for user in (alice, bob, carol, dave)
    }
    assert listed == {
        "alice": {"private", "team", "public"},
        "bob": {"team", "public"},
        "carol": {"public"},
        "dave": {"team", "public"},
    }
    # No duplicates from the team join, and bob's own private object stays his.
    own = _vector(bob, tiny)
    assert services.visible_to(alice, SteeringVector.objects.all()).count() == 3
    assert own not in services.visible_to(carol, SteeringVector.objects.all())
    with pytest.raises(SteeringVector.DoesNotExist):
        services.get_visible(carol, SteeringVector, objs["team"].pk)


def test_sharing_rules(
    alice: User, bob: User, carol: User, dave: User, team_t: Team, tiny: ModelDeployment
) -> None:
    with pytest.raises(ValidationError, match="Team visibility needs a team"):
        _vector(alice, tiny, None, Visibility.TEAM)
    with pytest.raises(PermissionDenied):
        _vector(carol, tiny, team_t, Visibility.TEAM)
    with pytest.raises(PermissionDenied):
        _vector(dave, tiny, team_t, Visibility.TEAM)  # viewers read only
    vector = _vector(alice, tiny)
    with pytest.raises(PermissionDenied):
        services.set_visibility(bob, vector, Visibility.PUBLIC)
    services.set_visibility(alice, vector, Visibility.TEAM, team_t)
    vector.refresh_from_db()
    assert (vector.visibility, vector.team_id) == ("team", team_t.pk)
    assert services.can_view(bob, vector) and not services.can_view(carol, vector)
    assert SteeringVector.objects.count() == 1


# ----------------------------------------------------------------------------- uploads
def test_vector_upload_round_trips_bit_exactly(alice: User, tiny: ModelDeployment) -> None:
    original = Vec({0: torch.randn(HIDDEN), 3: torch.randn(HIDDEN)}, method="pca_diff", metadata={"k": "v"})
    obj = services.upload_vector(alice, tiny, "honesty", "h.safetensors", to_safetensors_bytes(original))
    obj.refresh_from_db()
    assert (obj.layers, obj.hidden_size, obj.method) == ([0, 3], HIDDEN, "pca_diff")
    assert obj.content_hash == original.content_hash()
    assert obj.provenance["metadata"] == {"k": "v"}
    stored = services.load_vector(obj)
    assert all(torch.equal(stored.directions[k], original.directions[k]) for k in (0, 3))


def test_probe_and_dataset_uploads(alice: User, tiny: ModelDeployment) -> None:
    probe = services.upload_probe(alice, tiny, "p", "p.safetensors", _probe_file(), layer=-1)
    assert (probe.layer, probe.point, probe.width, probe.label_names) == (
        3,
        "resid_post",
        HIDDEN,
        ["negative", "positive"],
    )
    assert services.load_probe(probe).bias == 0.5
    act = LinearProbe(torch.ones(tiny.mlp_size), 0.0)
    assert (
        services.upload_probe(
            alice, tiny, "n", "n.safetensors", probe_bytes(act), layer=0, point="mlp_act"
        ).width
        == 128
    )
    dataset = services.upload_dataset(alice, "d", "d.csv", b"positive,negative\nyes,no\nup,down\n")
    assert (dataset.kind, dataset.row_count, dataset.rows[1]) == (
        "contrastive",
        2,
        {"positive": "up", "negative": "down"},
    )


@pytest.mark.parametrize(
    ("filename", "data", "message"),
    [
        ("v.pkl", pickle.dumps({"x": 1}), "refused"),
        ("v.safetensors", pickle.dumps({"x": 1}), "pickle"),
        (
            "v.safetensors",
            _vector_file(hidden=32),
            "layer 1: direction width 32 does not match the deployment's hidden size 64",
        ),
        ("v.safetensors", _vector_file(layers=(9,)), "layer 9 is out of range for this deployment"),
        ("v.safetensors", _vector_file()[:-7], "not a valid safetensors file"),
    ],
)
def test_bad_vector_uploads_are_refused_and_store_nothing(
    alice: User, tiny: ModelDeployment, filename: str, data: bytes, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        services.upload_vector(alice, tiny, "v", filename, data)
    assert SteeringVector.objects.count() == 0


def test_torch_save_and_oversized_uploads_are_refused(
    alice: User, tiny: ModelDeployment, settings: Any
) -> None:
    buf = io.BytesIO()
    torch.save({"layer.1": torch.zeros(HIDDEN)}, buf)
    with pytest.raises(ValidationError, match=r"torch\.save"):
        services.upload_vector(alice, tiny, "v", "v.safetensors", buf.getvalue())
    settings.STEERLAB_MAX_UPLOAD_BYTES = 100
    with pytest.raises(ValidationError, match="over the upload limit of 100 bytes"):
        services.upload_vector(alice, tiny, "v", "v.safetensors", _vector_file())
    with pytest.raises(ValidationError, match="over the upload limit of 100 bytes"):
        services.upload_dataset(alice, "d", "d.jsonl", b'{"text": "a", "label": "b"}\n' * 10)
    assert SteeringVector.objects.count() == 0


def test_bad_dataset_is_refused_naming_the_line(alice: User) -> None:
    with pytest.raises(ValidationError, match="line 3: missing 'label'"):
        services.upload_dataset(
            alice,
            "d",
            "d.jsonl",
            b'{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n{"text": "c"}\n',
        )


# ----------------------------------------------------------------------------- recipes
def test_recipe_versions_are_immutable(
    alice: User, bob: User, carol: User, team_t: Team, tiny: ModelDeployment
) -> None:
    vector = _vector(alice, tiny)
    recipe, v1 = services.create_recipe(alice, tiny, "r", _steer(vector.public_id))
    assert v1.number == 1
    assert v1.content_hashes == {vector.public_id: vector.content_hash}
    assert list(RecipeVersionRef.objects.values_list("ref", "vector_id")) == [(vector.public_id, vector.pk)]
    v2 = services.create_recipe_version(alice, recipe, _steer(vector.public_id, layer=2))
    assert v2.number == 2
    v1.refresh_from_db()
    assert v1.spec["interventions"][0]["layer"] == 1
    assert recipe.latest_version() == v2
    v1.spec = {"interventions": []}
    with pytest.raises(ImmutableError):
        v1.save()
    with pytest.raises(ImmutableError):
        RecipeVersion.objects.filter(pk=v1.pk).update(spec={})
    with pytest.raises(ImmutableError):
        v1.delete()
    with pytest.raises(PermissionDenied):
        services.create_recipe_version(carol, recipe, _steer(vector.public_id))
    with pytest.raises(PermissionDenied):  # bob is in T but the recipe is alice's private one
        services.create_recipe_version(bob, recipe, _steer(vector.public_id))
    assert RecipeVersion.objects.get(pk=v1.pk).spec["interventions"][0]["layer"] == 1
    assert RecipeVersion.objects.count() == 2


def test_recipe_refs_are_validated_and_nothing_is_created(
    alice: User, bob: User, tiny: ModelDeployment, other_deployment: ModelDeployment
) -> None:
    bobs_private = _vector(bob, tiny)
    elsewhere = services.upload_vector(alice, other_deployment, "o", "o.safetensors", _vector_file())
    probe = services.upload_probe(alice, tiny, "p", "p.safetensors", _probe_file(), layer=1)
    cases = [
        (_steer("vec_999999"), "interventions[0].vector", "no vector 'vec_999999' that you can see"),
        (
            _steer(bobs_private.public_id),
            "interventions[0].vector",
            f"no vector '{bobs_private.public_id}' that you can see",
        ),
        (_steer(elsewhere.public_id), "interventions[0].vector", "belongs to deployment 'other', not 'tiny'"),
        (_steer(probe.public_id), "interventions[0].vector", "is not a vector id"),
        (_steer("sha256:abc"), "interventions[0].vector", "vectors are referenced as vec_<id>"),
        (
            {"interventions": [{"op": "steer", "layer": 9, "vector": elsewhere.public_id}]},
            "interventions[0].vector",
            "other",
        ),
        (
            {"interventions": [{"op": "explode", "layer": 1}]},
            "interventions[0]",
            "does not match any of the expected tags",
        ),
        (
            {"interventions": [{"op": "probe", "layer": 1, "probe": "prb_424242"}]},
            "interventions[0].probe",
            "no probe",
        ),
    ]
    for spec, path, message in cases:
        with pytest.raises(ValidationError) as info:
            services.create_recipe(alice, tiny, "r", spec)
        assert path in info.value.message_dict, (spec, info.value.message_dict)
        assert message in " ".join(info.value.message_dict[path]), (spec, info.value.message_dict)
    vector = _vector(alice, tiny)
    with pytest.raises(ValidationError) as info:
        services.create_recipe(alice, tiny, "r", _steer(vector.public_id, layer=7))
    assert "out of range for a 4-layer model" in " ".join(info.value.message_dict["interventions[0].layer"])
    assert Recipe.objects.count() == 0
    assert RecipeVersion.objects.count() == 0
    recipe, _ = services.create_recipe(
        alice,
        tiny,
        "gated",
        {
            "interventions": [
                {"op": "probe", "layer": 1, "probe": probe.public_id},
                {
                    "op": "steer",
                    "layer": 2,
                    "vector": vector.public_id,
                    "when": {"probe": probe.public_id, "layer": 1},
                },
            ]
        },
    )
    assert set(RecipeVersionRef.objects.filter(version__recipe=recipe).values_list("ref", flat=True)) == {
        probe.public_id,
        vector.public_id,
    }


def test_team_member_can_version_a_team_recipe_using_team_vectors(
    alice: User, bob: User, dave: User, team_t: Team, tiny: ModelDeployment
) -> None:
    vector = _vector(alice, tiny, team_t, Visibility.TEAM)
    recipe, _ = services.create_recipe(
        alice, tiny, "r", _steer(vector.public_id), team=team_t, visibility="team"
    )
    assert services.create_recipe_version(bob, recipe, _steer(vector.public_id, layer=3)).number == 2
    with pytest.raises(PermissionDenied):
        services.create_recipe_version(dave, recipe, _steer(vector.public_id))


# ----------------------------------------------------------------------------- forks and deletion
def test_forks_keep_provenance(
    alice: User, bob: User, carol: User, team_t: Team, tiny: ModelDeployment
) -> None:
    vector = _vector(alice, tiny, team_t, Visibility.TEAM)
    fork = services.fork_vector(bob, vector)
    assert (fork.owner, fork.forked_from, fork.visibility) == (bob, vector, "private")
    assert fork.content_hash == vector.content_hash
    assert fork.provenance["forked_from"]["id"] == vector.public_id
    assert fork.provenance["source"] == "upload"
    with pytest.raises(PermissionDenied):
        services.fork_vector(carol, vector)
    probe = services.upload_probe(
        alice, tiny, "p", "p.safetensors", _probe_file(), layer=0, team=team_t, visibility="team"
    )
    assert services.fork_probe(bob, probe).forked_from == probe

    recipe, v1 = services.create_recipe(
        alice, tiny, "r", _steer(vector.public_id), team=team_t, visibility="team"
    )
    forked, f1 = services.fork_recipe(bob, v1)
    assert (forked.owner, forked.forked_from_version, f1.number, f1.spec) == (bob, v1, 1, v1.spec)
    with pytest.raises(PermissionDenied):
        services.fork_recipe(carol, v1)
    # A public recipe whose vector carol cannot see: the fork is refused, clearly, and writes nothing.
    services.set_visibility(alice, recipe, Visibility.PUBLIC)
    with pytest.raises(ValidationError, match="that you can see"):
        services.fork_recipe(carol, v1)
    assert Recipe.objects.filter(owner=carol).count() == 0


def test_deleting_a_referenced_vector_is_refused(alice: User, tiny: ModelDeployment) -> None:
    used, unused = _vector(alice, tiny), _vector(alice, tiny)
    services.create_recipe(alice, tiny, "r", _steer(used.public_id))
    with pytest.raises(ValidationError, match=f"Vector {used.public_id} is used by 1 recipe version"):
        services.delete_vector(alice, used)
    with pytest.raises(ProtectedError):
        used.delete()  # the database backstop (admin, shell)
    services.delete_vector(alice, unused)
    assert list(SteeringVector.objects.values_list("pk", flat=True)) == [used.pk]


def test_deleting_a_recipe_in_use_is_refused_and_an_unused_one_goes_with_its_versions(
    alice: User, bob: User, tiny: ModelDeployment
) -> None:
    from webapp.playground.services import create_conversation

    vector = _vector(alice, tiny)
    used, used_v1 = services.create_recipe(alice, tiny, "used", _steer(vector.public_id))
    unused, _ = services.create_recipe(alice, tiny, "unused", _steer(vector.public_id))
    services.create_recipe_version(alice, unused, _steer(vector.public_id))
    create_conversation(alice, tiny, recipe_version=used_v1)
    with pytest.raises(ValidationError, match="'used' is used by conversations or runs"):
        services.delete_recipe(alice, used)
    with pytest.raises(PermissionDenied):
        services.delete_recipe(bob, unused)
    services.delete_recipe(alice, unused)
    assert list(Recipe.objects.values_list("name", flat=True)) == ["used"]
    assert RecipeVersion.objects.filter(recipe=used).count() == 1
    assert not RecipeVersion.objects.filter(recipe_id=unused.pk).exists()


def test_deleting_needs_edit_rights(alice: User, bob: User, tiny: ModelDeployment) -> None:
    probe = services.upload_probe(alice, tiny, "p", "p.safetensors", _probe_file(), layer=0)
    with pytest.raises(PermissionDenied):
        services.delete_probe(bob, probe)
    services.delete_probe(alice, probe)
    assert Probe.objects.count() == 0


# ----------------------------------------------------------------------------- deployments
def test_register_model_tiny_reads_the_shape() -> None:
    out = io.StringIO()
    call_command("register_model", "tiny", "--tiny", stdout=out)
    deployment = ModelDeployment.objects.get(name="tiny")
    assert (deployment.hidden_size, deployment.num_layers) == (HIDDEN, LAYERS)
    assert (deployment.model_type, deployment.mlp_size, deployment.vocab_size) == ("llama", 128, 512)
    assert (deployment.engine, deployment.queue_name) == ("hf", "model.tiny")
    assert "4 layers, hidden 64" in out.getvalue()
    call_command("register_model", "tiny", "--tiny", stdout=io.StringIO())  # idempotent
    assert ModelDeployment.objects.count() == 1


def test_register_model_refuses_bad_input(tmp_path: Any) -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="Cannot read the model config"):
        call_command("register_model", "nope", str(tmp_path))
    with pytest.raises(CommandError, match="slug-like"):
        call_command("register_model", "Bad Name", "--tiny")
    call_command("register_model", "tiny", "--tiny", stdout=io.StringIO())
    with pytest.raises(CommandError, match="already registered with other settings"):
        call_command("register_model", "tiny", "--tiny", "--engine", "vllm")
    assert ModelDeployment.objects.count() == 1


# ----------------------------------------------------------------------------- admin
def test_admin_lists_every_library_model(alice: User, tiny: ModelDeployment) -> None:
    from django.test import Client

    alice.is_staff = alice.is_superuser = True
    alice.save()
    vector = _vector(alice, tiny)
    _, version = services.create_recipe(alice, tiny, "r", _steer(vector.public_id))
    client = Client()
    client.force_login(alice)
    for model in ("modeldeployment", "steeringvector", "probe", "dataset", "recipe", "recipeversion"):
        assert client.get(f"/admin/library/{model}/", secure=True).status_code == 200, model
    assert client.get(f"/admin/library/recipeversion/{version.pk}/change/", secure=True).status_code == 200
    # Versions are read-only in the admin: a POST cannot change one.
    client.post(f"/admin/library/recipeversion/{version.pk}/change/", {"number": 5}, secure=True)
    assert RecipeVersion.objects.get(pk=version.pk).number == 1
