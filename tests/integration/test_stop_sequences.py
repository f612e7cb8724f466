"""Stop sequences: a run ends at the first stop string it generates; its text leaves it out, its
tokens keep the ones that made it, and its replay and export redo it (``webapp.playground.stops``).
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from hypothesis import example, given, settings
from hypothesis import strategies as st
from support.runs import replayed
from support.stops import pick_stop

from webapp.playground import services
from webapp.playground.execution import _on_event, _Transcript, execute_run
from webapp.playground.hosting import get_host
from webapp.playground.models import Run, RunEvent, RunStatus
from webapp.playground.textstream import TextStream
from workers.engines.base import ReadEvent, TokenEvent

pytestmark = [pytest.mark.timeout(300)]

PROMPT = "Tell me a story"


# --------------------------------------------------------------------------------------------
# The executor's cut and the stream's release, on made-up tokens
# --------------------------------------------------------------------------------------------
class _Tokenizer:
    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(self.pieces[i] for i in ids)


class _Sink:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    def emit(self, event_type: str, **data: Any) -> None:
        self.frames.append({"type": event_type, **data})


@settings(max_examples=400)  # cheap: no model, no database
@given(
    pieces=st.lists(st.text("ab\n", min_size=0, max_size=3), min_size=1, max_size=24),
    stops=st.lists(st.text("ab\n", min_size=1, max_size=3), min_size=1, max_size=4),
)
@example(pieces=["x\n", "\ny"], stops=["\n\n"])  # a stop string split over two tokens
@example(pieces=["a", "b", "c"], stops=["abc", "bd"])  # a start that comes to nothing
@example(pieces=["aab"], stops=["ab"])  # a token holding text, the stop and more
def test_a_run_stops_at_the_first_stop_string_and_its_stream_never_shows_one(
    pieces: list[str], stops: list[str]
) -> None:
    tokenizer, sink = _Tokenizer(pieces), _Sink()
    t = _Transcript(prompt_len=3, probe_columns=[0], text_stream=TextStream(tokenizer, stops))
    for i in range(len(pieces)):
        # The engine may send a token and its reads after the stop (the abort takes a step).
        _on_event(TokenEvent("r", i, 3 + i, i, -0.5), sink, t, tokenizer)
        _on_event(ReadEvent("r", 3 + i, {0: 0.5}, {}), sink, t, tokenizer)
    tail = t.text_stream.end()

    # The tokens end with the first one that completes a stop string; the text ends before it.
    whole = "".join(pieces)
    ends = [k for k in range(1, len(pieces) + 1) if any(s in "".join(pieces[:k]) for s in stops)]
    kept = ends[0] if ends else len(pieces)
    assert t.stopped == bool(ends)
    assert t.tokens == list(range(kept))
    text = "".join(pieces[:kept])
    first = min((i for s in stops if (i := text.find(s)) >= 0), default=len(text))
    assert t.text == text[:first] == whole[:first]
    assert sorted(t.reads) == [3 + i for i in range(kept)]  # none for a dropped token

    # The token frames' texts and the tail join to the text, and no prefix of the stream shows
    # any part of a stop string.
    tokens = [f for f in sink.frames if f["type"] == "token"]
    assert [f["index"] for f in tokens] == list(range(kept))
    shown = ""
    for frame in tokens:
        shown += frame["text"]
        assert t.text.startswith(shown)
        assert not any(s in shown for s in stops)
    assert shown + tail == t.text


# --------------------------------------------------------------------------------------------
# Runs on the tiny model
# --------------------------------------------------------------------------------------------
def _run(user: Any, deployment: Any, **sampling: Any) -> Run:
    with pytest.MonkeyPatch.context() as patch:  # executed here, in this thread
        patch.setattr(services, "dispatch_on_commit", lambda runs: None)
        conversation = services.create_conversation(user, deployment)
        (run,) = services.start_turn(
            user,
            conversation,
            PROMPT,
            sampling=services.Sampling(max_new_tokens=24, temperature=0.9, top_p=1.0, seed=7, **sampling),
        )
    assert execute_run(run.pk, get_host()).status == RunStatus.DONE
    run.refresh_from_db()
    return run


def _token_texts(run: Run) -> list[str]:
    frames = RunEvent.objects.filter(run=run, payload__type="token").order_by("seq")
    return [f.payload["text"] for f in frames]


@pytest.mark.django_db(transaction=True)
def test_a_run_stopped_by_a_stop_string_is_replayed_and_exported_with_it(
    alice: Any, bob: Any, tiny_deployment: Any
) -> None:
    reference = _run(alice, tiny_deployment)
    assert reference.finish_reason == "length" and len(reference.tokens) == 24
    stop, kept = pick_stop(_token_texts(reference))

    run = _run(alice, tiny_deployment, stop=("never generated", stop))
    assert run.status == RunStatus.DONE and run.finish_reason == "stop"
    assert run.sampling["stop"] == ["never generated", stop]
    assert run.tokens == reference.tokens[:kept]
    assert run.text == reference.text[: reference.text.find(stop)]
    assert run.answer.content == run.text
    finished = RunEvent.objects.get(run=run, payload__type="finished").payload
    assert finished["reason"] == "stop" and finished["text"] == run.text

    client = Client()
    client.force_login(alice)
    redone = replayed(client, run)
    assert (redone.status, redone.finish_reason) == (RunStatus.DONE, "stop"), redone.error
    assert (redone.tokens, redone.text) == (run.tokens, run.text)

    export = client.get(f"/api/runs/{run.pk}/export")
    assert export.status_code == 200, export.content
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(export.content)).read("manifest.json"))
    assert manifest["sampling"]["stop"] == ["never generated", stop]
    importer = Client()
    importer.force_login(bob)
    imported = importer.post("/api/runs/import", {"file": SimpleUploadedFile("run.zip", export.content)})
    assert imported.status_code == 201, imported.content
    assert Run.objects.get(pk=imported.json()["id"]).sampling["stop"] == ["never generated", stop]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("stop", "says"),
    [
        (["a", "b", "c", "d", "e"], "at most 4"),
        ([""], "1 to 64 characters"),
        (["x" * 65], "1 to 64 characters"),
        (["\x00"], "no NUL"),
    ],
)
def test_bad_stop_sequences_are_refused_and_change_nothing(
    alice: Any, tiny_deployment: Any, stop: list[str], says: str
) -> None:
    conversation = services.create_conversation(alice, tiny_deployment)
    with pytest.raises(services.PlaygroundError, match=says):
        services.start_turn(alice, conversation, PROMPT, sampling=services.Sampling(stop=tuple(stop)))
    assert not Run.objects.exists()
