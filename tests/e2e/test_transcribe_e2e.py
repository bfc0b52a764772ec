"""`calling.transcribe` / `.stop` and SWML `transcribe` / `transcribe_stop` against the real
server: the far end speaks flite `rms` sentences over RTP, the transcript arrives as a §7.4
`calling.transcript.completed` callback and is stored with the call.

Measured (this machine, PCMU over loopback): the sentence pairs below come back word-perfect
(WER 0 %), offline through the same `Transcriber` and end to end; the bound asserted is 30 %.
The `slt` voice does much worse on the open language model (see providers/asr.py).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest
from farend import FarEnd
from harness import Receiver, Server, swml, until
from speech import requires_speech, say
from ticks import TickSession, tick_call

from callplane import AsyncRestClient, RestError
from callplane.engine.facade import CommandError
from callplane.engine.operations import transcribe as transcribe_module
from callplane.engine.services import Services
from callplane.engine.swml.errors import SwmlMethodNotSupported
from callplane.providers.asr import AsrError, word_error_rate

sys.path.insert(0, str(Path(__file__).parents[1] / "media" / "dsp"))

COMPLETED = "calling.transcript.completed"
FAILED = "calling.transcript.failed"
MAX_WER = 0.30
FIRST = "I would like to speak to someone about my bill"
SECOND = "please call me back tomorrow morning"


def transcripts(receiver: Receiver, path: str) -> list[dict[str, Any]]:
    return [e for e in receiver.events(path) if e.get("event_type") in (COMPLETED, FAILED)]


async def one_transcript(receiver: Receiver, path: str, within: float = 10) -> dict[str, Any]:
    found = await until(lambda: transcripts(receiver, path), within, f"a transcript at {path}")
    await asyncio.sleep(0.3)  # exactly one: nothing else follows
    assert len(transcripts(receiver, path)) == 1, transcripts(receiver, path)
    return cast(dict[str, Any], found[0])


def stored(server: Server, call_id: str) -> list[dict[str, Any]]:
    return cast(
        list[dict[str, Any]], server.get(f"/api/calling/calls/{call_id}/events").json()["data"]
    )


async def dial_far_end(client: AsyncRestClient, server: Server, far_end: FarEnd) -> str:
    leg = await client.calling.dial(from_="+15559876543", to=far_end.uri, swml=swml({"sleep": -1}))
    await asyncio.wait_for(far_end.answered.wait(), 10)
    await until(lambda: server.call_status(leg["id"]) == "answered", 5, "answered")
    return str(leg["id"])


@requires_speech
async def test_stop_delivers_the_far_ends_two_sentences(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    first, second = say(FIRST), say(SECOND)
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        call_id = await dial_far_end(client, server, far_end)
        await client.calling.transcribe(
            call_id, control_id="tx", status_url=receiver.url("/transcript")
        )
        # Only one per call (reference §9 #23), whatever its control_id.
        with pytest.raises(RestError) as second_start:
            await client.calling.transcribe(call_id, control_id="tx2")
        assert second_start.value.status_code == 409
        await far_end.silence(0.5)
        await far_end.play(first)
        await far_end.silence(1.5)
        await far_end.play(second)
        await far_end.silence(1.0)
        await client.calling.transcribe_stop(call_id, control_id="tx")
        event = await one_transcript(receiver, "/transcript")
        assert event["event_type"] == COMPLETED
        # Reference §7.4: exactly these fields, no event_channel, no node_id.
        assert set(event) == {"event_type", "timestamp", "project_id", "space_id", "params"}
        params = event["params"]
        assert set(params) == {"id", "call_id", "segment_id", "text"}
        assert params["call_id"] == call_id
        wer = word_error_rate(f"{FIRST} {SECOND}", params["text"])
        assert wer <= MAX_WER, (wer, params["text"])
        # Stopped: stopping again names nothing, and a new transcription may start.
        with pytest.raises(RestError) as again:
            await client.calling.transcribe_stop(call_id, control_id="tx")
        assert again.value.status_code == 422
        await client.calling.transcribe(call_id, control_id="tx3")
        await client.calling.end(call_id)
        await until(lambda: server.call_status(call_id) == "ended", 10, "ended")

    events = stored(server, call_id)
    kept = [e for e in events if e["event_type"] == COMPLETED]
    assert kept[0]["params"]["id"] == params["id"]
    assert len(kept) == 2  # tx, then tx3 ended by the hang-up (no speech: no text)
    assert "text" not in kept[1]["params"]
    states = [
        (e["params"]["control_id"], e["params"]["state"])
        for e in events
        if e["event_type"] == "calling.call.transcribe"
    ]
    assert states == [
        ("tx", "transcribing"),
        ("tx", "finished"),
        ("tx3", "transcribing"),
        ("tx3", "finished"),
    ]


@requires_speech
async def test_the_call_ending_stops_it_and_keeps_the_last_words(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    sentence = say(SECOND)
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        call_id = await dial_far_end(client, server, far_end)
        await client.calling.transcribe(
            call_id, control_id="tx", status_url=receiver.url("/transcript")
        )
        await far_end.silence(0.3)
        await far_end.play(sentence)
        # Hang up right after the last word: the open utterance is still decoded.
        await client.calling.end(call_id)
        event = await one_transcript(receiver, "/transcript")
        assert event["event_type"] == COMPLETED
        # What is checked is that the utterance was not lost with the call (a lost one scores
        # 1.0), not the recogniser: on a loaded machine one six-word run came back "please
        # call me back by rewarding" (0.33), recognition variance, not a lost tail.
        assert word_error_rate(SECOND, event["params"]["text"]) <= 0.5, event
        await until(lambda: server.call_status(call_id) == "ended", 10, "ended")
    types = [e["event_type"] for e in stored(server, call_id)]
    assert types.index(COMPLETED) < len(types) - 1  # before the call's `ended`
    assert types[-1] == "calling.call.state"


@requires_speech
async def test_silence_only_completes_without_text(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        call_id = await dial_far_end(client, server, far_end)
        await client.calling.transcribe(
            call_id, control_id="quiet", status_url=receiver.url("/transcript")
        )
        await far_end.silence(1.0)  # and then no RTP at all for a while
        await asyncio.sleep(0.5)
        await client.calling.transcribe_stop(call_id, control_id="quiet")
        event = await one_transcript(receiver, "/transcript")
        assert event["event_type"] == COMPLETED
        assert "text" not in event["params"]
        assert set(event["params"]) == {"id", "call_id", "segment_id"}
        await client.calling.end(call_id)


@requires_speech
async def test_swml_transcribe_and_transcribe_stop(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    first, second = say(FIRST), say(SECOND)

    def report(path: str, body: dict[str, str]) -> dict[str, Any]:
        return {"request": {"url": receiver.url(path), "method": "POST", "body": body}}

    document = swml(
        {"answer": {}},
        {"transcribe": {"status_url": receiver.url("/swml-transcript")}},
        report(
            "/started",
            {"result": "${transcribe_result}", "control_id": "${transcribe_control_id}"},
        ),
        {"transcribe": {}},  # a second one fails; the first keeps running
        report("/again", {"result": "${transcribe_result}"}),
        {"sleep": 9000},
        {"transcribe_stop": {}},
        report("/stopped", {"result": "${transcribe_stop_result}"}),
        {"transcribe_stop": {}},
        report("/stopped-again", {"result": "${transcribe_stop_result}"}),
        {"hangup": {}},
    )

    def hit(path: str) -> Any:
        return next((h.body for h in receiver.hits if h.path == path), None)

    async with AsyncRestClient(server.project, server.token, server.host) as client:
        leg = await client.calling.dial(from_="+15559876543", to=far_end.uri, swml=document)
        await asyncio.wait_for(far_end.answered.wait(), 10)
        started = await until(lambda: hit("/started"), 10, "/started")
        assert started["result"] == "success"
        assert started["control_id"].startswith("swml-transcribe-")
        assert (await until(lambda: hit("/again"), 5, "/again"))["result"] == "failed"
        await far_end.silence(0.3)
        await far_end.play(first)
        await far_end.silence(1.2)
        await far_end.play(second)
        await far_end.silence(0.8)
        stopped = await until(lambda: hit("/stopped"), 15, "/stopped")
        assert stopped["result"] == "success"
        assert (await until(lambda: hit("/stopped-again"), 5, "x"))["result"] == "failed"
        # transcribe_stop waited for the callback: it was queued before the script went on.
        event = await one_transcript(receiver, "/swml-transcript")
        assert event["event_type"] == COMPLETED
        wer = word_error_rate(f"{FIRST} {SECOND}", event["params"]["text"])
        assert wer <= MAX_WER, (wer, event["params"]["text"])
        await until(lambda: server.call_status(leg["id"]) == "ended", 10, "the hangup")


async def test_no_recognizer_answers_501() -> None:
    """A server without pocketsphinx (Services.recognizer is None) refuses, REST and SWML."""
    services = cast(Services, SimpleNamespace(recognizer=None))
    call = cast(Any, SimpleNamespace(id="c", status="answered", operations={}, media=object()))
    with pytest.raises(CommandError) as refused:
        await transcribe_module.COMMANDS["calling.transcribe"](services, call, {"control_id": "x"})
    assert refused.value.status == 501
    assert call.operations == {}


async def test_a_recognizer_that_fails_sends_transcript_failed() -> None:
    """In process: a recognizer that cannot open a session ends the transcription at once with
    `calling.transcript.failed` {id, segment_id} (no text) and frees the call's slot."""

    class Broken:
        def supports(self, language: str | None) -> bool:
            return True

        def open_session(self, *args: Any, **kwargs: Any) -> Any:
            raise AsrError("the model is missing")

    delivered: list[tuple[dict[str, Any], str | None]] = []
    logged: list[tuple[str, dict[str, Any]]] = []
    services = cast(
        Services,
        SimpleNamespace(
            recognizer=Broken(),
            config=SimpleNamespace(space_id="space"),
            deliver=lambda call, payload, url: delivered.append((payload, url)),
            record_event=lambda call, kind, params: logged.append((kind, params)),
        ),
    )
    media = TickSession()
    call = tick_call(media)
    await transcribe_module.COMMANDS["calling.transcribe"](
        services, call, {"control_id": "x", "status_url": "http://127.0.0.1:9/t"}
    )
    op = call.operations[("transcribe", "x")]
    media.tick()
    assert await asyncio.wait_for(asyncio.shield(op.done), 5) == "error"
    [(payload, url)] = delivered
    assert url == "http://127.0.0.1:9/t"
    assert payload["event_type"] == FAILED and payload["space_id"] == "space"
    assert payload["params"] == {
        "id": op.transcript_id,
        "call_id": call.id,
        "segment_id": call.segment_id,
    }
    assert [p["state"] for kind, p in logged] == ["transcribing", "error"]
    assert call.operations == {} and media.listeners == []
    # SWML on a server without a recognizer: the method is unsupported (the script stops).
    services = cast(Services, SimpleNamespace(recognizer=None))
    with pytest.raises(SwmlMethodNotSupported):
        await transcribe_module.SWML_METHODS["transcribe"](services, call, {})


@requires_speech
async def test_ticks_alone_make_a_transcript() -> None:
    """In process, driven by TickFrames: two sentences, each followed by ticks where nothing
    arrived (the far end stopped sending RTP), then stop: the transcript has both."""
    from callplane.providers.asr import PocketSphinxRecognizer

    delivered: list[dict[str, Any]] = []
    services = cast(
        Services,
        SimpleNamespace(
            recognizer=PocketSphinxRecognizer(),
            config=SimpleNamespace(space_id="space"),
            deliver=lambda call, payload, url: delivered.append(payload),
            record_event=lambda call, kind, params: None,
        ),
    )
    session = TickSession()
    call = tick_call(session)
    await transcribe_module.COMMANDS["calling.transcribe"](services, call, {"control_id": "t"})
    op = call.operations[("transcribe", "t")]
    for sentence in (FIRST, SECOND):
        audio = say(sentence)
        session.ticks(
            np.concatenate([audio, np.zeros((-audio.size) % 160, np.int16)]).reshape(-1, 160)
        )
        session.silence(1.0)
        await asyncio.sleep(0.05)  # let the worker take the batch (decoding is in a thread)
    await op.stop()
    assert await asyncio.wait_for(asyncio.shield(op.done), 30) == "finished"
    [payload] = delivered
    assert payload["event_type"] == COMPLETED
    wer = word_error_rate(f"{FIRST} {SECOND}", payload["params"]["text"])
    assert wer <= MAX_WER, (wer, payload["params"]["text"])
