"""Stock vLLM, as its users run it in-process: the baseline of ``vllm_overhead.py``.

A process of its own that never imports Steerlab (it checks, and says so at the end): vLLM's V1
``LLMEngine`` with ``add_request``/``step`` on the same model and settings as Steerlab's engine
(in-process engine core and executor, chunked prefill, prefix caching off, the same sizes, compiled
or eager), greedy, ``ignore_eos``. It takes commands as JSON lines on stdin and answers with JSON
lines on stdout prefixed ``@@`` (vLLM may print its own lines there too):

* ``{"cmd": "start", "tag": str}``: queue the batch (its prompts were given on the command line);
* ``{"cmd": "step"}``: one step, timed here: ``[seconds, new tokens, still has work]``;
* ``{"cmd": "stop"}``: ``{"steerlab_imported": bool}`` and exit.

Usage: ``python _stock_vllm.py '<json settings>'`` (``model``, ``requests``, ``new_tokens``,
``max_batch_tokens``, ``max_model_len``, ``kv_cache_bytes``, ``eager``, ``prompts``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


def reply(value: Any) -> None:
    sys.stdout.write("@@" + json.dumps(value) + "\n")
    sys.stdout.flush()


def main() -> None:
    settings = json.loads(sys.argv[1])
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the same in-process layout as Steerlab's
    os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
    from vllm import EngineArgs, SamplingParams
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine.llm_engine import LLMEngine

    engine = LLMEngine.from_engine_args(
        EngineArgs(
            model=settings["model"],
            skip_tokenizer_init=True,
            dtype="float32",
            max_num_seqs=settings["requests"],
            max_num_batched_tokens=settings["max_batch_tokens"],
            max_model_len=settings["max_model_len"],
            enable_chunked_prefill=True,
            enable_prefix_caching=False,
            kv_cache_memory_bytes=settings["kv_cache_bytes"],
            distributed_executor_backend="uni",
            enforce_eager=settings["eager"],
            seed=0,
            disable_log_stats=True,
        )
    )
    params = SamplingParams(
        max_tokens=settings["new_tokens"],
        temperature=0.0,
        ignore_eos=True,
        detokenize=False,
        output_kind=RequestOutputKind.DELTA,
    )
    reply("ready")
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "start":
            for i, prompt in enumerate(settings["prompts"]):
                engine.add_request(f"{command['tag']}{i}", {"prompt_token_ids": prompt}, params)
            reply(None)
        elif command["cmd"] == "step":
            start = time.perf_counter()
            outputs = engine.step()
            seconds = time.perf_counter() - start
            tokens = sum(len(o.outputs[0].token_ids) for o in outputs if o.outputs)
            reply([seconds, tokens, engine.has_unfinished_requests()])
        else:
            imported = any(
                name.split(".")[0] in ("interventions", "workers", "webapp") for name in sys.modules
            )
            reply({"steerlab_imported": imported})
            return


if __name__ == "__main__":
    main()
