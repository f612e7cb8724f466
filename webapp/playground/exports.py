"""Reproducible run exports: one zip file that holds everything needed to redo a run.

``manifest.json`` names the model (deployment name, source, revision, geometry), the engine and its
version, the interventions (the recipe version's spec, or the inline spec) with the content hash of
every vector and probe, the prompt (messages and token ids), the sampling parameters and seed, the
per-turn overrides, the live-adjustment log with the step each adjustment took effect at, and the
result. ``tensors/<ref>.safetensors`` holds each vector and probe (safetensors only: an import
never unpickles anything). Importing one writes the tensors to the importer's library (or reuses
an identical one they can see), re-checks every hash, and creates a finished run that
``replay_run`` redoes — its tokens equal the exported ones.
"""

from __future__ import annotations

import io
import logging
import zipfile
from typing import Any, Literal

import pydantic
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from pydantic import BaseModel, ConfigDict, Field

from interventions import probes as probe_io
from interventions import vectors as vector_io
from webapp import untrusted_json
from webapp.accounts.models import User
from webapp.library.models import PROBE_PREFIX, VECTOR_PREFIX, ModelDeployment, Probe, SteeringVector
from webapp.library.services import can_view, upload_probe, upload_vector, validate_recipe_spec, visible_to
from webapp.playground.completions import MAX_CHARS, MAX_MESSAGES
from webapp.playground.models import Conversation, Message, Role, Run, RunStatus, Source
from webapp.playground.services import PlaygroundError, Sampling, check_overrides, not_found, stop_sequences

log = logging.getLogger(__name__)

FORMAT = "steerlab.run"
FORMAT_VERSION = 1
EXPORTABLE = (RunStatus.DONE, RunStatus.STOPPED)
MAX_ADJUSTMENTS = 4096  # an imported run's adjustment log (a live run's grows one entry a message)
MAX_MEMBERS = 258  # the manifest and at most 256 tensors (a recipe has at most 64 interventions)


# --------------------------------------------------------------------------------------------
# The manifest (validated on import: an export is untrusted input)
# --------------------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelOut(_Strict):
    name: str
    source: str
    revision: str
    model_type: str
    num_layers: int
    hidden_size: int
    vocab_size: int


class TensorEntry(_Strict):
    kind: Literal["vector", "probe"]
    content_hash: str = Field(max_length=64)
    name: str = Field(max_length=100)
    layer: int | None = None  # probes: their site
    point: str | None = None


class RecipeRef(_Strict):
    recipe: int
    name: str
    version: int


class Manifest(_Strict):
    format: Literal["steerlab.run"]
    format_version: Literal[1]
    exported_at: str
    site_run: int  # the run's id where it was exported
    model: ModelOut
    engine: dict[str, str]
    recipe: RecipeRef | None
    spec: dict[str, Any] | None
    tensors: dict[str, TensorEntry]
    messages: list[dict[str, str]]
    prompt_tokens: list[int]
    sampling: dict[str, Any]
    overrides: list[dict[str, Any]]
    adjustments: list[dict[str, Any]]
    status: Literal["done", "stopped"]
    finish_reason: str
    tokens: list[int]
    text: str


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------
def _library_object(user: User, ref: str, content_hash: str) -> SteeringVector | Probe:
    model: type[SteeringVector] | type[Probe] = SteeringVector if ref.startswith(VECTOR_PREFIX) else Probe
    found = model.objects.filter(pk=int(ref.split("_", 1)[1]), content_hash=content_hash).first()
    if found is None or not can_view(user, found):
        raise PlaygroundError(
            "invalid", f"{ref} as this run used it is no longer in your library: it cannot be exported"
        )
    return found


def tensor_files(
    user: User, content_hashes: dict[str, str]
) -> tuple[dict[str, TensorEntry], dict[str, bytes]]:
    """The manifest entries and safetensors files of the vectors and probes a run (or batch) used."""
    entries: dict[str, TensorEntry] = {}
    files: dict[str, bytes] = {}
    for ref, content_hash in sorted(content_hashes.items()):
        obj = _library_object(user, ref, content_hash)
        if isinstance(obj, SteeringVector):
            entries[ref] = TensorEntry(kind="vector", content_hash=content_hash, name=obj.name)
            files[ref] = bytes(obj.tensors)
        else:
            entries[ref] = TensorEntry(
                kind="probe", content_hash=content_hash, name=obj.name, layer=obj.layer, point=obj.point
            )
            files[ref] = bytes(obj.weight)
    return entries, files


def model_entry(deployment: ModelDeployment) -> ModelOut:
    return ModelOut(
        name=deployment.name,
        source=deployment.hf_id_or_path,
        revision=deployment.revision,
        model_type=deployment.model_type,
        num_layers=deployment.num_layers,
        hidden_size=deployment.hidden_size,
        vocab_size=deployment.vocab_size,
    )


def zip_export(manifest: BaseModel, files: dict[str, bytes], extra: dict[str, bytes] | None = None) -> bytes:
    """``manifest.json``, ``tensors/<ref>.safetensors`` and any ``extra`` files, as one zip."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", manifest.model_dump_json(indent=2))
        for ref, data in files.items():
            archive.writestr(f"tensors/{ref}.safetensors", data)
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


def export_run(user: User, run: Run) -> tuple[str, bytes]:
    """(file name, zip bytes) of ``user``'s finished run."""
    if run.user_id != user.pk:
        raise not_found("run")
    if run.status not in EXPORTABLE:
        raise PlaygroundError("invalid", f"run {run.pk} is {run.status}: only finished runs can be exported")
    entries, files = tensor_files(user, run.content_hashes)
    history = Message.objects.filter(conversation_id=run.conversation_id, pk__lte=run.prompt_message_id)
    version = run.recipe_version
    manifest = Manifest(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        exported_at=timezone.now().isoformat(),
        site_run=run.pk,
        model=model_entry(run.deployment),
        engine=dict(run.engine),
        recipe=None
        if version is None
        else RecipeRef(recipe=version.recipe_id, name=version.recipe.name, version=version.number),
        spec=run.spec,
        tensors=entries,
        messages=[{"role": m.role, "content": m.content} for m in history.order_by("id")],
        prompt_tokens=list(run.prompt_tokens),
        sampling=dict(run.sampling),
        overrides=list(run.overrides),
        adjustments=list(run.adjustments),
        status=run.status,  # type: ignore[arg-type]
        finish_reason=run.finish_reason,
        tokens=list(run.tokens),
        text=run.text,
    )
    log.info("playground.run_exported", extra={"run": run.pk})
    return f"steerlab-run-{run.pk}.zip", zip_export(manifest, files)


# --------------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------------
def _read_archive(data: bytes) -> tuple[Manifest, dict[str, bytes]]:
    limit = settings.STEERLAB_MAX_UPLOAD_BYTES
    if len(data) > limit:
        raise PlaygroundError(
            "too_large", f"the export is {len(data)} bytes, over the upload limit of {limit}"
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, ValueError):
        raise PlaygroundError("invalid", "this is not a Steerlab run export (not a zip file)") from None
    if len(members) > MAX_MEMBERS or sum(m.file_size for m in members) > limit:
        raise PlaygroundError("too_large", "the export unpacks to more than the upload limit")
    names = {m.filename for m in members}
    if "manifest.json" not in names:
        raise PlaygroundError("invalid", "the export has no manifest.json")
    try:
        manifest = Manifest.model_validate(untrusted_json.loads(archive.read("manifest.json")))
    except untrusted_json.UntrustedJsonError as exc:
        raise PlaygroundError("invalid", f"manifest.json: {exc}") from None
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "manifest"
        raise PlaygroundError("invalid", f"manifest.json: {where}: {first['msg']}") from None
    expected = {"manifest.json", *(f"tensors/{ref}.safetensors" for ref in manifest.tensors)}
    if names != expected:
        odd = sorted(names ^ expected)
        raise PlaygroundError(
            "invalid", f"the export's files do not match its manifest: {', '.join(odd[:5])}"
        )
    try:
        tensors = {ref: archive.read(f"tensors/{ref}.safetensors") for ref in manifest.tensors}
    except (zipfile.BadZipFile, ValueError) as exc:
        raise PlaygroundError("invalid", f"the export is damaged: {exc}") from None
    return manifest, tensors


def _deployment(manifest: Manifest) -> ModelDeployment:
    want = manifest.model
    found = ModelDeployment.objects.filter(name=want.name).first()
    if found is None:
        raise PlaygroundError("invalid", f"this site serves no model {want.name!r} (the export's model)")
    have = (found.hf_id_or_path, found.revision, found.num_layers, found.hidden_size, found.vocab_size)
    if (want.revision, want.num_layers, want.hidden_size, want.vocab_size) != have[1:]:
        raise PlaygroundError(
            "invalid",
            f"model {want.name!r} here is not the export's: revision {found.revision or '-'} with "
            f"{found.num_layers} layers, hidden {found.hidden_size}, vocabulary {found.vocab_size}; the export "
            f"was made on revision {want.revision or '-'} with {want.num_layers} layers, hidden "
            f"{want.hidden_size}, vocabulary {want.vocab_size}",
        )
    return found


def _content_hash(entry: TensorEntry, data: bytes) -> str:
    try:
        if entry.kind == "vector":
            return vector_io.from_safetensors_bytes(data).content_hash()
        return probe_io.from_safetensors_bytes(data).content_hash()
    except Exception:
        raise PlaygroundError("invalid", f"{entry.name!r} is not a readable {entry.kind} file") from None


def _library_copy(
    user: User, deployment: ModelDeployment, ref: str, entry: TensorEntry, data: bytes
) -> SteeringVector | Probe:
    """The importer's copy of an exported tensor: an identical one they can see, or a new upload."""
    if _content_hash(entry, data) != entry.content_hash:
        raise PlaygroundError(
            "invalid", f"{ref}'s tensor does not match its content hash: the export was altered"
        )
    model: type[SteeringVector] | type[Probe] = SteeringVector if entry.kind == "vector" else Probe
    same = visible_to(
        user, model.objects.filter(deployment=deployment, content_hash=entry.content_hash)
    ).first()
    if same is not None:
        return same
    try:
        if entry.kind == "vector":
            obj: SteeringVector | Probe = upload_vector(
                user, deployment, entry.name, f"{ref}.safetensors", data
            )
        else:
            obj = upload_probe(
                user,
                deployment,
                entry.name,
                f"{ref}.safetensors",
                data,
                layer=entry.layer if entry.layer is not None else -1,
                point=entry.point or "resid_post",
            )
    except ValidationError as exc:
        raise PlaygroundError("invalid", f"{ref}: {' '.join(exc.messages)}") from None
    if obj.content_hash != entry.content_hash:
        raise PlaygroundError(
            "invalid", f"{ref}'s tensor does not match its content hash: the export was altered"
        )
    return obj


def _renamed(spec: Any, names: dict[str, str]) -> Any:
    """``spec`` with every library id replaced by the importer's copy's id."""
    if isinstance(spec, dict):
        return {key: _renamed(value, names) for key, value in spec.items()}
    if isinstance(spec, list):
        return [_renamed(value, names) for value in spec]
    if isinstance(spec, str) and spec.startswith((VECTOR_PREFIX, PROBE_PREFIX)):
        if spec not in names:
            raise PlaygroundError("invalid", f"the spec uses {spec}, which the export does not carry")
        return names[spec]
    return spec


def _adjustments(spec: dict[str, Any] | None, log_: list[dict[str, Any]], steps: int) -> list[dict[str, Any]]:
    """The adjustment log, checked as live adjustments are, each at a step within the run."""
    out = []
    for entry in log_:
        step = entry.get("step")
        if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step <= steps:
            raise PlaygroundError("invalid", f"an adjustment's step must be an integer in [0, {steps}]")
        (checked,) = check_overrides(spec, [{k: v for k, v in entry.items() if k != "step"}])
        out.append({"step": step, **checked})
    return out


def _check_limits(manifest: Manifest) -> None:
    """An imported run is held to the limits of a run started here: its prompt's length in tokens,
    its messages' number, roles and length, and its adjustment log's size (max_new_tokens and the
    sampling ranges are checked by ``Sampling.resolved``)."""
    limit = settings.STEERLAB_MAX_PROMPT_TOKENS
    if len(manifest.prompt_tokens) > limit:
        raise PlaygroundError(
            "invalid",
            f"the export's prompt is {len(manifest.prompt_tokens)} tokens long; the limit here is {limit}",
        )
    if len(manifest.messages) > MAX_MESSAGES:
        raise PlaygroundError("invalid", f"the export has more than {MAX_MESSAGES} messages")
    if any(m.get("role") not in Role.values or set(m) - {"role", "content"} for m in manifest.messages):
        raise PlaygroundError(
            "invalid", "each message of the export is {role: system|user|assistant, content}"
        )
    if (
        sum(len(m.get("content", "")) for m in manifest.messages) > MAX_CHARS
        or len(manifest.text) > MAX_CHARS
    ):
        raise PlaygroundError(
            "invalid", f"the export's messages or answer are longer than {MAX_CHARS} characters"
        )
    if len(manifest.adjustments) > MAX_ADJUSTMENTS:
        raise PlaygroundError(
            "invalid", f"the export's adjustment log holds more than {MAX_ADJUSTMENTS} entries"
        )


@transaction.atomic
def import_run(user: User, data: bytes) -> Run:
    """A finished run in ``user``'s account rebuilt from an export (nothing is written if it is refused)."""
    manifest, tensors = _read_archive(data)
    deployment = _deployment(manifest)
    if any(not 0 <= t < deployment.vocab_size for t in [*manifest.prompt_tokens, *manifest.tokens]):
        raise PlaygroundError("invalid", "the export has token ids outside the model's vocabulary")
    if not manifest.prompt_tokens or not manifest.messages or manifest.messages[-1].get("role") != "user":
        raise PlaygroundError("invalid", "the export has no prompt")
    _check_limits(manifest)
    s = manifest.sampling
    try:
        sampling = Sampling(
            max_new_tokens=int(s["max_new_tokens"]),
            temperature=float(s["temperature"]),
            top_p=float(s["top_p"]),
            seed=int(s["seed"]),
            stop=stop_sequences(s.get("stop")),
            top_logprobs=s.get("top_logprobs", 0),
        ).resolved()
    except (KeyError, TypeError, ValueError):
        raise PlaygroundError("invalid", "the export's sampling parameters are incomplete") from None
    except PlaygroundError as exc:  # out of this site's ranges: the export is what is wrong
        raise PlaygroundError("invalid", f"the export's sampling: {exc.message}") from None
    spec, hashes = None, {}
    if manifest.spec is not None:
        copies = {
            ref: _library_copy(user, deployment, ref, entry, tensors[ref])
            for ref, entry in manifest.tensors.items()
        }
        renamed = _renamed(manifest.spec, {ref: obj.public_id for ref, obj in copies.items()})
        try:
            parsed, objects = validate_recipe_spec(user, deployment, renamed)
        except ValidationError as exc:
            raise PlaygroundError(
                "invalid", f"the export's interventions: {' '.join(exc.messages)}"
            ) from None
        spec = parsed.model_dump(mode="json")
        hashes = {ref: obj.content_hash for ref, obj in sorted(objects.items())}
    overrides = check_overrides(spec, manifest.overrides)
    if len(manifest.tokens) > sampling["max_new_tokens"]:
        raise PlaygroundError("invalid", "the export has more tokens than its max_new_tokens allows")
    adjustments = _adjustments(spec, manifest.adjustments, sampling["max_new_tokens"])
    conversation = Conversation.objects.create(
        owner=user,
        deployment=deployment,
        source=Source.IMPORT,
        title=f"Imported: {manifest.text[:60]}".strip(),
    )
    rows = Message.objects.bulk_create(
        [
            Message(conversation=conversation, role=m.get("role", "user"), content=str(m.get("content", "")))
            for m in manifest.messages
        ]
    )
    now = timezone.now()
    run = Run.objects.create(
        conversation=conversation,
        user=user,
        deployment=deployment,
        prompt_message=rows[-1],
        spec=spec,
        content_hashes=hashes,
        prompt_tokens=manifest.prompt_tokens,
        sampling=sampling,
        max_new_tokens=sampling["max_new_tokens"],
        overrides=overrides,
        status=manifest.status,
        queued_at=now,
        finished_at=now,
        adjustments=adjustments,
        tokens=manifest.tokens,
        text=manifest.text,
        finish_reason=manifest.finish_reason,
        engine=dict(manifest.engine),
        imported={
            "site_run": manifest.site_run,
            "exported_at": manifest.exported_at,
            "model": manifest.model.model_dump(),
            "recipe": None if manifest.recipe is None else manifest.recipe.model_dump(),
        },
    )
    log.info("playground.run_imported", extra={"run": run.pk})
    return run
