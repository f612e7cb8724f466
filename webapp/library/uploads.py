"""Uploaded tensor files -> validated vectors and probes, checked against a model deployment.

Pure parsing and validation: no ORM here, so the unit tier tests it without a database. The
services call these functions and store what they return.

Accepted formats:

* steering vectors: ``.safetensors``, ``.gguf`` (llama.cpp / repeng control vectors), ``.npy``;
* probes: ``.safetensors`` as written by ``interventions.probes.to_safetensors_bytes``.

Anything pickled is refused, by extension (``.pt``, ``.pth``, ``.pkl``, ``.bin``, ``.ckpt``, ...) and
by content (a pickle protocol header, or a zip archive such as ``torch.save`` output): loading a
pickle can run arbitrary code, so Steerlab never does. Every failure is one :class:`UploadError`
whose message is meant for the person who uploaded the file.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import PurePath

from interventions.probes import LinearProbe, ProbeError
from interventions.probes import from_safetensors_bytes as probe_from_safetensors
from interventions.vectors import (
    SteeringVector,
    VectorError,
    from_gguf_bytes,
    from_npy_bytes,
)
from interventions.vectors import from_safetensors_bytes as vector_from_safetensors

__all__ = [
    "DEFAULT_MAX_UPLOAD_BYTES",
    "PICKLE_EXTENSIONS",
    "PROBE_EXTENSIONS",
    "VECTOR_EXTENSIONS",
    "UploadError",
    "check_not_pickled",
    "max_upload_bytes",
    "parse_probe_upload",
    "parse_vector_upload",
]

DEFAULT_MAX_UPLOAD_BYTES = 64 * 1024 * 1024
# Extensions of formats that are (or usually wrap) Python pickles.
PICKLE_EXTENSIONS = frozenset(
    {".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt", ".joblib", ".dill", ".npz", ".tar"}
)
VECTOR_EXTENSIONS = (".safetensors", ".gguf", ".npy")
PROBE_EXTENSIONS = (".safetensors",)
_PICKLE_REFUSAL = (
    "pickled files are refused because loading them can run arbitrary code; "
    "convert the tensors to safetensors (safetensors.torch.save_file) and upload that"
)


class UploadError(ValueError):
    """An uploaded file that cannot be accepted; the message says why, for the uploader."""


def max_upload_bytes() -> int:
    """The upload size limit: ``settings.STEERLAB_MAX_UPLOAD_BYTES``, else 64 MiB.

    Read at call time (tests override it); without configured Django settings, the default.
    """
    from django.conf import settings

    if not settings.configured:
        return DEFAULT_MAX_UPLOAD_BYTES
    value = getattr(settings, "STEERLAB_MAX_UPLOAD_BYTES", DEFAULT_MAX_UPLOAD_BYTES)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UploadError(f"STEERLAB_MAX_UPLOAD_BYTES must be a positive int, got {value!r}")
    return value


def _extension(filename: str) -> str:
    return PurePath(filename or "").suffix.lower()


def _as_bytes(data: object) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise UploadError(f"expected the uploaded file as bytes, got {type(data).__name__}")
    return bytes(data)


def _check_size(raw: bytes, filename: str, max_bytes: int | None) -> None:
    limit = max_upload_bytes() if max_bytes is None else max_bytes
    if len(raw) > limit:
        raise UploadError(f"{filename!r} is {len(raw)} bytes, over the upload limit of {limit} bytes")
    if not raw:
        raise UploadError(f"{filename!r} is empty")


def _has_own_magic(ext: str, raw: bytes) -> bool:
    """Whether ``raw`` starts like a file of its extension's (pickle-free) format.

    Needed before sniffing for pickles: a safetensors file starts with its header length, whose
    first bytes can be ``0x80 0x02`` (a 640-byte header) just like a pickle protocol header.
    """
    if ext == ".gguf":
        return raw[:4] == b"GGUF"
    if ext == ".npy":
        return raw[:6] == b"\x93NUMPY"
    if ext == ".safetensors":
        if len(raw) < 9:
            return False
        header_len = int.from_bytes(raw[:8], "little")
        return 0 < header_len <= len(raw) - 8 and raw[8:9] == b"{"
    return False


def _looks_pickled(raw: bytes) -> str | None:
    """Why ``raw`` looks like a pickle (or a pickle container), or None."""
    if raw[:1] == b"\x80" and raw[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        # Protocol 2+ pickles (torch's legacy format included) open with the PROTO opcode.
        return f"it starts with a pickle protocol {raw[1]} header"
    if raw[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(raw)) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return "it is a zip archive (as torch.save() writes)"
        if any(name.endswith(".pkl") for name in names):
            return "it is a torch.save() zip archive holding data.pkl"
        return "it is a zip archive (as torch.save() and .npz write)"
    return None


def check_not_pickled(filename: str, data: bytes) -> None:
    """Refuse pickled uploads by extension and by content.

    Args:
        filename: the uploaded file's name.
        data: its bytes.

    Raises:
        UploadError: naming what gave the pickle away.
    """
    ext = _extension(filename)
    if ext in PICKLE_EXTENSIONS:
        raise UploadError(f"{filename!r}: {ext} files are refused: {_PICKLE_REFUSAL}")
    why = None if _has_own_magic(ext, data) else _looks_pickled(data)
    if why is not None:
        raise UploadError(f"{filename!r}: {why}; {_PICKLE_REFUSAL}")


def _check_extension(filename: str, allowed: tuple[str, ...], what: str) -> str:
    ext = _extension(filename)
    if ext not in allowed:
        shown = repr(ext) if ext else "no extension"
        raise UploadError(f"{filename!r}: {shown} is not a {what} format; upload one of {', '.join(allowed)}")
    return ext


def _normalize_layer(layer: int, num_layers: int, what: str) -> int:
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise UploadError(f"{what}: the layer must be an int, got {layer!r}")
    if not -num_layers <= layer < num_layers:
        raise UploadError(
            f"{what}: layer {layer} is out of range for this deployment "
            f"({num_layers} layers: 0..{num_layers - 1}, or negative from the end)"
        )
    return layer % num_layers


def parse_vector_upload(
    data: bytes,
    filename: str,
    *,
    num_layers: int,
    hidden_size: int,
    layer: int | None = None,
    max_bytes: int | None = None,
) -> SteeringVector:
    """Read and validate an uploaded steering vector for a deployment.

    Args:
        data: the uploaded bytes.
        filename: its name; the extension picks the format (``.safetensors``, ``.gguf``, ``.npy``).
        num_layers: the deployment's decoder layer count; every layer must be below it.
        hidden_size: the deployment's residual width; every direction must have it.
        layer: the layer of a file holding a single ``[hidden]`` direction (negative counts from
            the end); files that name their layers must not pass it.
        max_bytes: size limit; ``max_upload_bytes()`` when None.

    Raises:
        UploadError: pickled, oversized, malformed or truncated file, NaN/Inf, a layer out of
            range, a width other than the deployment's.
    """
    raw = _as_bytes(data)
    _check_size(raw, filename, max_bytes)
    check_not_pickled(filename, raw)
    ext = _check_extension(filename, VECTOR_EXTENSIONS, "steering-vector")
    absolute = None if layer is None else _normalize_layer(layer, num_layers, repr(filename))
    try:
        if ext == ".safetensors":
            vector = vector_from_safetensors(raw, layer=absolute)
        elif ext == ".gguf":
            if absolute is not None:
                raise UploadError(
                    f"{filename!r}: a GGUF control vector names its layers; do not pass a layer"
                )
            vector = from_gguf_bytes(raw)
        else:
            vector = from_npy_bytes(raw, layer=absolute)
    except VectorError as exc:
        raise UploadError(f"{filename!r}: {exc}") from exc
    for index in vector.layers:
        if index >= num_layers:
            raise UploadError(
                f"{filename!r}: layer {index} is out of range for this deployment "
                f"({num_layers} layers: 0..{num_layers - 1})"
            )
    if vector.hidden_size != hidden_size:
        first = vector.layers[0]
        raise UploadError(
            f"{filename!r}: layer {first}: direction width {vector.hidden_size} does not match "
            f"the deployment's hidden size {hidden_size}"
        )
    return vector


def parse_probe_upload(
    data: bytes,
    filename: str,
    *,
    num_layers: int,
    width: int,
    layer: int,
    max_bytes: int | None = None,
) -> tuple[LinearProbe, int]:
    """Read and validate an uploaded linear probe for a site of a deployment.

    Args:
        data: the uploaded bytes (safetensors, tensors ``weight`` [H] and ``bias`` [1]).
        filename: its name (must end in ``.safetensors``).
        num_layers: the deployment's decoder layer count.
        width: the width of the probe's site (hidden size, or the MLP size for ``mlp_act``).
        layer: the layer the probe reads (negative counts from the end).
        max_bytes: size limit; ``max_upload_bytes()`` when None.

    Returns:
        The probe and its absolute layer.

    Raises:
        UploadError: as :func:`parse_vector_upload`.
    """
    raw = _as_bytes(data)
    _check_size(raw, filename, max_bytes)
    check_not_pickled(filename, raw)
    _check_extension(filename, PROBE_EXTENSIONS, "probe")
    absolute = _normalize_layer(layer, num_layers, repr(filename))
    try:
        probe = probe_from_safetensors(raw)
    except ProbeError as exc:
        raise UploadError(f"{filename!r}: {exc}") from exc
    if probe.hidden_size != width:
        raise UploadError(
            f"{filename!r}: layer {absolute}: probe width {probe.hidden_size} does not match "
            f"the site's width {width}"
        )
    return probe, absolute
