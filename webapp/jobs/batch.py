"""Batch runs (the ``batch_run`` job kind): a recipe applied to every prompt of a dataset.

Each row of a labelled dataset is the user message of a one-turn chat: its prompt is
``chat_prompt(tokenizer, [{"role": "user", "content": text}])``, its request is built by the
function that builds a chat run's (``webapp.playground.execution.generation_request``: the same
recipe, overrides and sampling), and its seed is :func:`prompt_seed` of the job's seed and the
row's index. So a prompt's result is what a chat turn with that message, recipe and seed
generates, and a resumed batch run regenerates exactly the tokens it would have.

The prompts of one stored batch (``BATCH_PROMPTS`` rows) go to the engine together and share its
continuous batch. A stored batch is JSON: ``{"engine": {...}, "results": [...]}``, one result per
row of the batch's slice of the dataset (row index, prompt, label, prompt token count, seed,
generated token ids, text, finish reason, per-token logprobs and, when the job keeps reads, each
probe's per-token score and each logit lens' per-token top-k, by intervention index). Batches are
stored once per index (``JobBatch``'s unique constraint), and each covers a fixed slice of rows,
so the downloads (:func:`jsonl_lines` and :func:`ajsonl_lines`, :func:`parquet_file`), read from
the stored batches in order, hold exactly one result per prompt whatever the number of attempts.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from asgiref.sync import sync_to_async
from django.conf import settings

from webapp.jobs.kinds import dataset_rows
from webapp.jobs.models import Job, JobBatch
from webapp.jobs.runner import JobContext, JobFailed
from webapp.playground.execution import decode_text, generation_request, resolve_refs
from webapp.playground.services import chat_prompt
from webapp.playground.textstream import TextStream, text_of
from workers.engines.base import Event, FinishedEvent, GenerationRequest, ReadEvent, TokenEvent

BATCH_PROMPTS = 16  # prompts per stored batch, generated together (fixed: resumption relies on it)
SEED_MODULUS = 1 << 31


def prompt_seed(seed: int, index: int) -> int:
    """The sampling seed of row ``index`` of a batch run whose seed is ``seed``."""
    return (seed + index) % SEED_MODULUS


def read_columns(spec: dict[str, Any] | None) -> tuple[list[int], list[int]]:
    """The intervention indices of the recipe's probes and of its logit lenses."""
    interventions = (spec or {}).get("interventions", [])
    probes = [i for i, item in enumerate(interventions) if item.get("op") == "probe"]
    lenses = [i for i, item in enumerate(interventions) if item.get("op") == "logit_lens"]
    return probes, lenses


def _result(
    row: tuple[int, str, str],
    prompt_len: int,
    seed: int,
    events: list[Event],
    tokenizer: Any,
    columns: tuple[list[int], list[int]] | None,
    stop: list[str],
    stopped_at: int | None,
) -> dict[str, Any]:
    """``stopped_at``: how many tokens came up to the one that completed a stop string (None:
    no stop string was generated)."""
    index, prompt, label = row
    tokens = [e for e in events if isinstance(e, TokenEvent)]
    finished = events[-1]
    assert isinstance(finished, FinishedEvent)
    reason = finished.reason
    if stopped_at is not None:
        # As a chat run: it ends at the token that completed the stop string (those the engine
        # sampled before its finish took effect are dropped), its text before the stop string.
        tokens, reason = tokens[:stopped_at], "stop"
    ids = [e.token_id for e in tokens]
    text, _ = text_of(tokenizer, ids, stop)  # as a chat turn's stream gives it
    out: dict[str, Any] = {
        "index": index,
        "prompt": prompt,
        "label": label,
        "prompt_tokens": prompt_len,
        "seed": seed,
        "tokens": ids,
        "text": text,
        "finish_reason": reason,
        "logprobs": [round(float(e.logprob), 6) for e in tokens],
        "reads": None,
    }
    if columns is not None:
        # Generated token i sits at position prompt_len + i; its reads are those of that position.
        by_position = {e.position: e for e in events if isinstance(e, ReadEvent)}
        reads = [by_position.get(prompt_len + i) for i in range(len(ids))]
        probes, lenses = columns
        out["reads"] = {
            "probes": {
                str(p): [
                    None if r is None or p not in r.probes else round(float(r.probes[p]), 6) for r in reads
                ]
                for p in probes
            },
            "lens": {str(lens): [_lens(r, lens, tokenizer) for r in reads] for lens in lenses},
        }
    return out


def _lens(read: ReadEvent | None, index: int, tokenizer: Any) -> dict[str, Any] | None:
    if read is None or index not in read.lens:
        return None
    ids, probs = read.lens[index]
    return {
        "ids": [int(t) for t in ids],
        "tokens": [decode_text(tokenizer, [int(t)]) for t in ids],
        "probs": [round(float(p), 6) for p in probs],
    }


def _refused(row: tuple[int, str, str], prompt_len: int, seed: int, error: str) -> dict[str, Any]:
    """The result of a prompt the engine is not given (too long): no tokens, the reason why."""
    index, prompt, label = row
    return {
        "index": index,
        "prompt": prompt,
        "label": label,
        "prompt_tokens": prompt_len,
        "seed": seed,
        "tokens": [],
        "text": "",
        "finish_reason": "error",
        "logprobs": [],
        "reads": None,
        "error": error,
    }


class BatchRun:
    batch_size = BATCH_PROMPTS

    def items(self, job: Job) -> list[Any]:
        return [(i, row["text"], row["label"]) for i, row in enumerate(dataset_rows(job, "labelled"))]

    def run_batch(self, ctx: JobContext, items: list[Any]) -> bytes:
        job, params = ctx.job, ctx.job.params
        if job.deployment.revision != params["model"]["revision"]:
            raise JobFailed("the model's revision changed after the job was created: start a new job")
        if "resolved" not in ctx.cache:
            ctx.cache["resolved"] = resolve_refs(params["content_hashes"], ctx.host)
        tokenizer = ctx.model.tokenizer
        limit = settings.STEERLAB_MAX_PROMPT_TOKENS
        sampling = params["sampling"]
        planned: list[tuple[tuple[int, str, str], list[int], int]] = []
        results: dict[int, dict[str, Any]] = {}
        requests: list[GenerationRequest] = []
        for row in items:
            prompt = chat_prompt(tokenizer, [{"role": "user", "content": row[1]}])
            seed = prompt_seed(sampling["seed"], row[0])
            if len(prompt) > limit:
                message = f"the prompt is {len(prompt)} tokens long; the limit is {limit}"
                results[row[0]] = _refused(row, len(prompt), seed, message)
                continue
            planned.append((row, prompt, seed))
            requests.append(
                generation_request(
                    ctx.request_id(),
                    job.deployment,
                    params["spec"],
                    ctx.cache["resolved"],
                    tokenizer,
                    prompt,
                    {**sampling, "seed": seed},
                    params["overrides"],
                )
            )
        columns = read_columns(params["spec"]) if params["reads"] else None
        stop = sampling.get("stop", [])
        stopped_at: dict[int, int] = {}  # request -> tokens up to its stop string's end
        streams: dict[int, TextStream] = {}  # request -> its text so far, as a chat turn streams it

        def until(i: int, ids: list[int]) -> bool:  # end a prompt once its stop string is out
            stream = streams.setdefault(i, TextStream(tokenizer, stop))
            for n in range(len(stream.decoder.ids), len(ids)):  # only the tokens it has not seen
                stream.push(ids[n])
                if stream.stopped:
                    stopped_at[i] = n + 1
                    return True
            return False

        events_of = ctx.run(requests, until if stop else None) if requests else []
        for i, ((row, prompt, seed), events) in enumerate(zip(planned, events_of, strict=True)):
            results[row[0]] = _result(
                row, len(prompt), seed, events, tokenizer, columns, stop, stopped_at.get(i)
            )
        info = ctx.model.engine.info()
        batch = {
            "engine": {"engine": info.engine, "version": info.version},
            "results": [results[row[0]] for row in items],
        }
        return json.dumps(batch, separators=(",", ":")).encode()

    def finish(self, ctx: JobContext, items: list[Any], batches: list[bytes]) -> None:
        results: list[dict[str, Any]] = []
        engines: list[dict[str, str]] = []
        for blob in batches:
            batch = json.loads(blob)
            results.extend(batch["results"])
            if batch["engine"] not in engines:
                engines.append(batch["engine"])
        indices = [r["index"] for r in results]
        if indices != [index for index, _, _ in items]:  # one result per prompt, in order
            raise JobFailed("the stored batches do not hold exactly one result per prompt")
        ctx.job.result = summary(results, engines)


def summary(results: list[dict[str, Any]], engines: list[dict[str, str]]) -> dict[str, Any]:
    """A finished batch run's result: counts, finish reasons, generated tokens, the engines."""
    generated = sum(len(r["tokens"]) for r in results)
    return {
        "prompts": len(results),
        "finish_reasons": dict(sorted(Counter(r["finish_reason"] for r in results).items())),
        "tokens": generated,
        "mean_tokens": round(generated / len(results), 4) if results else 0.0,
        "engines": engines,
    }


# --------------------------------------------------------------------------------------------
# Downloads: from the stored batches, in order (one result per prompt)
# --------------------------------------------------------------------------------------------
def _stored_batches(job: Job) -> Iterator[dict[str, Any]]:
    blobs = JobBatch.objects.filter(job=job).order_by("index").values_list("data", flat=True)
    for blob in blobs.iterator(chunk_size=4):
        yield json.loads(bytes(blob))


def _lines(batch: dict[str, Any]) -> Iterator[bytes]:
    for result in batch["results"]:
        yield json.dumps(result, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def jsonl_lines(job: Job) -> Iterator[bytes]:
    """The JSON Lines download: one object per prompt, ordered by row index."""
    for batch in _stored_batches(job):
        yield from _lines(batch)


def _batch_indices(job_id: int) -> list[int]:
    return list(JobBatch.objects.filter(job_id=job_id).order_by("index").values_list("index", flat=True))


def _batch(job_id: int, index: int) -> dict[str, Any]:
    blob = JobBatch.objects.filter(job_id=job_id, index=index).values_list("data", flat=True).get()
    return dict(json.loads(bytes(blob)))


async def ajsonl_lines(job: Job) -> AsyncIterator[bytes]:
    """``jsonl_lines`` for an ASGI server, which streams only an asynchronous iterator (a
    synchronous one it would read whole first): one stored batch read at a time."""
    for index in await sync_to_async(_batch_indices)(job.pk):
        for line in _lines(await sync_to_async(_batch)(job.pk, index)):
            yield line


def _lens_type() -> pa.DataType:
    return pa.list_(pa.list_(pa.int32()))


def parquet_schema(job: Job) -> pa.Schema:
    """One row per prompt; list columns for tokens and logprobs, and one per read."""
    params = job.params
    fields = [
        pa.field("index", pa.int32()),
        pa.field("prompt", pa.string()),
        pa.field("label", pa.string()),
        pa.field("prompt_tokens", pa.int32()),
        pa.field("seed", pa.int64()),
        pa.field("tokens", pa.list_(pa.int32())),
        pa.field("text", pa.string()),
        pa.field("finish_reason", pa.string()),
        pa.field("logprobs", pa.list_(pa.float32())),
        pa.field("error", pa.string()),
    ]
    columns: dict[str, Any] = {}
    if params["reads"]:
        probes, lenses = read_columns(params["spec"])
        interventions = params["spec"]["interventions"] if params["spec"] else []
        for p in probes:
            fields.append(pa.field(f"probe_{p}", pa.list_(pa.float32())))
            columns[f"probe_{p}"] = {"intervention": p, "probe": interventions[p]["probe"]}
        for lens in lenses:
            fields.append(pa.field(f"lens_{lens}_ids", _lens_type()))
            fields.append(pa.field(f"lens_{lens}_probs", pa.list_(pa.list_(pa.float32()))))
            columns[f"lens_{lens}"] = {"intervention": lens, "layer": interventions[lens]["layer"]}
    metadata = {
        "job": job.pk,
        "name": job.name,
        "deployment": job.deployment.name,
        "model": params["model"],
        "recipe": params["recipe"],
        "sampling": params["sampling"],
        "seeds": "row seed = (sampling.seed + index) mod 2**31",
        "overrides": params["overrides"],
        "dataset": {"id": job.dataset_id, "content_hash": params["dataset_hash"]},
        "engines": job.result.get("engines", []),
        "read_columns": columns,
    }
    return pa.schema(fields, metadata={"steerlab": json.dumps(metadata)})


def _table(schema: pa.Schema, results: list[dict[str, Any]]) -> pa.Table:
    columns: dict[str, list[Any]] = {name: [] for name in schema.names}
    for r in results:
        for name in ("index", "prompt", "label", "prompt_tokens", "seed", "tokens", "text", "finish_reason"):
            columns[name].append(r[name])
        columns["logprobs"].append(r["logprobs"])
        columns["error"].append(r.get("error"))
        reads = r["reads"] or {"probes": {}, "lens": {}}
        for name in schema.names:
            if name.startswith("probe_"):
                columns[name].append(reads["probes"].get(name.removeprefix("probe_")))
            elif name.startswith("lens_") and name.endswith("_ids"):
                index = name.removeprefix("lens_").removesuffix("_ids")
                steps = reads["lens"].get(index)
                columns[name].append(None if steps is None else [s and s["ids"] for s in steps])
            elif name.startswith("lens_") and name.endswith("_probs"):
                index = name.removeprefix("lens_").removesuffix("_probs")
                steps = reads["lens"].get(index)
                columns[name].append(None if steps is None else [s and s["probs"] for s in steps])
    return pa.table(columns, schema=schema)


def parquet_file(job: Job) -> bytes:
    """The Parquet download: one row group per stored batch, rows ordered by row index."""
    schema = parquet_schema(job)
    out = io.BytesIO()
    with pq.ParquetWriter(out, schema, compression="zstd") as writer:
        for batch in _stored_batches(job):
            writer.write_table(_table(schema, batch["results"]))
    return out.getvalue()
