"""`calling.live_transcribe` / `calling.live_translate` (and their SWML methods).

Tick-driven tests (no sockets but the local model server on 127.0.0.1) check the state machine:
events, directions, 409/422, summaries, translation routing and the local-caller deafness
while callplane speaks. They use a scripted recognizer: each run of loud frames followed by
silence is one utterance with a known text, so what is checked is this module's logic.
The e2e tests run the real path: flite speech over RTP, pocketsphinx, the model server,
TTS heard by the far ends and recognised back.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import numpy as np
import pytest
from farend import FarEnd, rms_db
from harness import Receiver, Server, swml, until
from speech import requires_speech, say
from ticks import TickSession, tick_call

from callplane import AsyncRestClient, RestError
from callplane.engine.facade import CommandError
from callplane.engine.operations import live
from callplane.engine.services import Services
from callplane.engine.swml.errors import SwmlMethodNotSupported
from callplane.media import sources
from callplane.providers.asr import AsrError, RecognitionEvent, word_error_rate
from callplane.providers.llm import LlmSettings, OpenAiChat

sys.path.insert(0, str(Path(__file__).parents[1] / "media" / "dsp"))
sys.path.insert(0, str(Path(__file__).parents[1] / "providers"))
from llm_server import ModelServer, Turn

LOUD = np.full(160, 8000, dtype=np.int16)


# ------------------------------------------------------------------------------ tick-driven


class ScriptedSession:
    """An utterance = loud frames, then `end` silent frames; its text is the next script line."""

    def __init__(self, texts: list[str], end: int, partial: bool) -> None:
        self.texts, self.end, self.partial = texts, end, partial
        self.done = False
        self.frames = self.loud = self.quiet = 0

    def feed(self, frame: np.ndarray) -> list[RecognitionEvent]:
        self.frames += 1
        now = self.frames / 50
        if np.abs(frame).max() > 1000:
            self.loud += 1
            self.quiet = 0
            if self.loud == 3:
                return [RecognitionEvent("start_of_input", offset=now)]
            if self.partial and self.loud == 10:
                return [RecognitionEvent("partial", text="part", offset=now)]
            return []
        if self.loud:
            self.quiet += 1
            if self.quiet >= self.end:
                self.done = True
                text = self.texts.pop(0) if self.texts else "more"
                return [RecognitionEvent("final", text=text, confidence=0.9, offset=now)]
        return []

    def feed_many(self, frames: Any) -> list[RecognitionEvent]:
        return [e for f in frames for e in self.feed(f)]

    def close(self) -> None:
        self.done = True


class ScriptedRecognizer:
    def __init__(self, *texts: str) -> None:
        self.texts = list(texts)
        self.languages: list[str | None] = []

    def supports(self, language: str | None) -> bool:
        return str(language).lower().startswith("en")

    def open_session(self, language: str | None = "en-US", **kw: Any) -> ScriptedSession:
        self.languages.append(language)
        end = max(1, round(kw["end_silence_timeout"] * 50))
        return ScriptedSession(self.texts, end, kw.get("partial_results", False))


class Audio:
    """The TTS path: a 0.4 s tone per sentence, the sentences kept."""

    def __init__(self) -> None:
        self.spoken: list[tuple[str, str, Any]] = []

    async def resolve(self, item: dict[str, Any], *, language: str, voice: Any, gender: str) -> Any:
        if voice == "elevenlabs.josh":
            raise RuntimeError("no such voice")
        self.spoken.append((item["params"]["text"], language, voice))
        return sources.tone(440, 0.4)


class Events:
    def __init__(self) -> None:
        self.sent: list[tuple[str | None, dict[str, Any]]] = []

    def __call__(self, target: Any, params: dict[str, Any]) -> None:
        assert target.event_type.startswith("calling.call.live_")
        self.sent.append((target.status_url, params))

    def states(self) -> list[str]:
        return [p["state"] for _, p in self.sent]

    def of(self, state: str) -> list[dict[str, Any]]:
        return [p for _, p in self.sent if p["state"] == state]


@pytest.fixture
async def llm(model: ModelServer) -> AsyncIterator[OpenAiChat]:
    async with httpx.AsyncClient() as http:
        yield OpenAiChat(LlmSettings(url=model.url, model="tiny"), http)


def services(events: Events, recognizer: Any, llm: Any = None, audio: Any = None) -> Services:
    return cast(Services, SimpleNamespace(emit=events, recognizer=recognizer, llm=llm, audio=audio))


def command(name: str) -> Any:
    return live.COMMANDS[name]


async def refused(coro: Any) -> CommandError:
    with pytest.raises(CommandError) as caught:
        await coro
    return caught.value


async def test_transcribe_directions_summary_and_its_refusals(
    llm: OpenAiChat, model: ModelServer
) -> None:
    events = Events()
    svc = services(events, ScriptedRecognizer("hello there", "how are you"), llm)
    media = TickSession()
    call = tick_call(media)
    run = command("calling.live_transcribe")
    hook = "http://127.0.0.1:9/live"
    start = {"lang": "en-US", "direction": ["remote-caller", "local-caller"], "webhook": hook}
    start |= {"live_events": True, "vad_silence_ms": 400, "ai_summary": True}
    assert (await refused(run(svc, call, {"action": "stop"}))).status == 422
    assert (await refused(run(svc, call, {"action": {"summarize": {}}}))).status == 422
    french = {"start": {**start, "lang": "fr-FR"}}
    bad = await refused(run(svc, call, {"action": french}))
    assert bad.status == 422 and bad.attribute == "action.start.lang"
    await run(svc, call, {"action": {"start": start}})
    assert (await refused(run(svc, call, {"action": {"start": start}}))).status == 409

    for _ in range(15):  # the far end talks: remote-caller
        media.tick(inbound=LOUD)
    media.silence(0.4)
    await until(lambda: events.of("utterance")[1:], 5, "the remote utterance")
    for _ in range(15):  # the leg hears something: local-caller
        media.tick(outbound=LOUD)
    media.silence(0.4)
    await until(lambda: len(events.of("utterance")) >= 4, 5, "the local utterance")

    partials = [p for p in events.of("utterance") if not p["final"]]
    first, second = [p for p in events.of("utterance") if p["final"]]
    assert [(p["text"], p["direction"]) for p in partials] == [
        ("part", "remote-caller"),
        ("part", "local-caller"),
    ]
    assert all("utterance_id" not in p for p in partials)
    assert (first["text"], first["direction"], first["final"]) == (
        "hello there",
        "remote-caller",
        True,
    )
    assert (second["text"], second["direction"]) == ("how are you", "local-caller")
    assert first["lang"] == "en-US" and first["utterance_id"] == 1 and second["utterance_id"] == 2
    # Times in ms of audio since the start: speech from tick 0 (onset 60 ms before the 3rd loud
    # frame), silence from frame 15 on; the second utterance begins after the first's silence.
    assert 0 <= first["start_ms"] <= 20 and 280 <= first["end_ms"] <= 340
    assert 600 <= second["start_ms"] <= 700 < second["end_ms"] <= 1000
    assert second["end_time"] - second["start_time"] == pytest.approx(
        (second["end_ms"] - second["start_ms"]) / 1000, abs=0.002
    )
    assert all(url == hook for url, _ in events.sent)

    model.script(Turn("They greeted each other."), Turn("Final summary."))
    await run(svc, call, {"action": {"summarize": {"prompt": "Be brief."}}})
    [summary] = await until(lambda: events.of("summary"), 5, "the summary")
    assert summary == {
        "control_id": summary["control_id"],
        "state": "summary",
        "utterances": 2,
        "summary": "They greeted each other.",
    }
    sent = model.requests[0].body["messages"]
    assert sent[0] == {"role": "system", "content": "Be brief."}
    assert sent[1]["content"] == "remote-caller: hello there\nlocal-caller: how are you"

    await run(svc, call, {"action": "stop"})
    op = next(iter(call.operations.values()))
    assert await asyncio.wait_for(asyncio.shield(op.done), 5) == "finished"
    assert events.states()[0] == "started" and events.states()[-2:] == ["summary", "finished"]
    assert events.of("summary")[-1]["summary"] == "Final summary."  # ai_summary at the end
    assert call.operations == {} and media.listeners == []
    assert (await refused(run(svc, call, {"action": "stop"}))).status == 422


async def test_without_a_model_a_summary_says_why_and_translation_is_501() -> None:
    events = Events()
    svc = services(events, ScriptedRecognizer("only words"))
    media = TickSession()
    call = tick_call(media)
    start = {"lang": "en", "direction": ["remote-caller"], "ai_summary": True}
    await command("calling.live_transcribe")(svc, call, {"action": {"start": start}})
    for _ in range(10):
        media.tick(inbound=LOUD)
    await command("calling.live_transcribe")(svc, call, {"action": "stop"})  # flushes the words
    op = next(iter(call.operations.values()))
    assert await asyncio.wait_for(asyncio.shield(op.done), 5) == "finished"
    assert [p["text"] for p in events.of("utterance")] == ["only words"]
    [summary] = events.of("summary")
    assert "no language model" in summary["error"] and "summary" not in summary
    translate = {"start": {"from_lang": "en", "to_lang": "es", "direction": ["remote-caller"]}}
    error = await refused(command("calling.live_translate")(svc, call, {"action": translate}))
    assert error.status == 501


async def test_translate_speaks_to_the_caller_inject_and_is_deaf_to_itself(
    llm: OpenAiChat, model: ModelServer
) -> None:
    events = Events()
    audio = Audio()
    recognizer = ScriptedRecognizer("good morning", "bonjour")
    svc = services(events, recognizer, llm, audio)
    media = TickSession()
    call = tick_call(media)
    run = command("calling.live_translate")
    start = {
        "from_lang": "en-US",
        "to_lang": "fr-FR",  # no French model: local-caller is not recognised, said so
        "direction": ["remote-caller", "local-caller"],
        "to_voice": "elevenlabs.josh",
        "filter_to": "polite",
        "filter_from": "prompt:Talk like a pirate.",
    }
    status = "http://127.0.0.1:9/status"
    only_french = {"start": {**start, "from_lang": "fr", "direction": ["remote-caller"]}}
    assert (await refused(run(svc, call, {"action": only_french}))).status == 422
    model.script(Turn("Bonjour."), Turn("Ahoy, stay a while."))
    await run(svc, call, {"action": {"start": start}, "status_url": status})
    [started] = events.of("started")
    assert started["not_recognised"] == {"local-caller": "no speech recognition model for 'fr-FR'"}
    assert started["direction"] == ["remote-caller"] and recognizer.languages == []

    for _ in range(15):
        media.tick(inbound=LOUD)
    media.silence(1.0)
    [translation] = await until(lambda: events.of("translation"), 5, "the translation")
    assert translation["text"] == "good morning" and translation["translation"] == "Bonjour."
    assert (translation["direction"], translation["to"]) == ("remote-caller", "local-caller")
    assert (translation["from_lang"], translation["to_lang"]) == ("en-US", "fr-FR")
    assert translation["spoken_to"] == call.id  # no bridge: to the caller
    system = model.requests[0].body["messages"][0]["content"]
    assert "from en-US into fr-FR" in system and "polite" in system
    await until(lambda: audio.spoken, 5, "the speech")
    # The default voice after an unknown one; the translation plays on the leg.
    assert audio.spoken == [("Bonjour.", "fr-FR", None)]
    [playback] = media.playbacks
    assert playback.source.queued_frames == 20

    await run(
        svc, call, {"action": {"inject": {"message": "Please wait.", "direction": "remote-caller"}}}
    )
    await until(lambda: len(audio.spoken) == 2, 5, "the injected speech")
    assert audio.spoken[1] == ("Ahoy, stay a while.", "en-US", None)
    injected = events.of("translation")[1]
    assert injected["injected"] is True and injected["to_lang"] == "en-US"
    assert "Talk like a pirate." in model.requests[1].body["messages"][0]["content"]
    assert all(url == status for url, _ in events.sent)

    await run(svc, call, {"action": "stop"})
    op = next(iter(call.operations.values()))
    assert await asyncio.wait_for(asyncio.shield(op.done), 5) == "finished"
    assert playback.stopped and len(events.of("utterance")) == 1


async def test_local_caller_is_not_transcribed_while_the_translation_plays(
    llm: OpenAiChat, model: ModelServer
) -> None:
    events = Events()
    audio = Audio()
    svc = services(events, ScriptedRecognizer("hi", "heard"), llm, audio)
    media = TickSession()
    call = tick_call(media)
    start = {"from_lang": "en", "to_lang": "en-GB", "direction": ["local-caller"]}
    model.script(Turn("Hello."))
    await command("calling.live_translate")(svc, call, {"action": {"start": start}})
    op = next(iter(call.operations.values()))
    assert isinstance(op, live.LiveTranslateOperation)
    op.inject("hi", "local-caller")  # spoken on the leg: its outbound is local-caller's audio
    await until(lambda: media.playbacks and media.playbacks[0].source.queued_frames, 5, "speech")
    media.silence(1.0)  # the tone plays out: callplane's own voice, not transcribed
    await asyncio.sleep(0.2)
    assert events.of("utterance") == []
    for _ in range(15):  # afterwards the leg hears someone else: transcribed
        media.tick(outbound=LOUD)
    media.silence(1.0)
    [heard] = await until(lambda: events.of("utterance"), 5, "the local utterance")
    assert heard["text"] == "hi" and heard["direction"] == "local-caller"
    await op.stop()


# ------------------------------------------------------------------------------ e2e


def recognise(samples: np.ndarray) -> str:
    from callplane.engine.operations.transcribe import Transcriber
    from callplane.providers.asr import PocketSphinxRecognizer

    t = Transcriber(PocketSphinxRecognizer())
    audio = np.concatenate([samples.astype(np.int16), np.zeros(16000, np.int16)])
    t.feed(audio[: audio.size // 160 * 160].reshape(-1, 160))
    t.flush()
    t.close()
    return t.text


def stored(server: Server, call_id: str, event_type: str) -> list[dict[str, Any]]:
    data = server.get(f"/api/calling/calls/{call_id}/events").json()["data"]
    return [e["params"] for e in data if e.get("event_type") == event_type]


@pytest.fixture
def llm_server(make_server: Callable[..., Server], model: ModelServer) -> Server:
    return make_server(extra_args=["--llm-url", model.url, "--llm-model", "tiny"])


SENTENCE = "I would like to speak to someone about my bill"


@requires_speech
async def test_client_live_transcribe_both_sides_summary_and_stop(
    llm_server: Server, model: ModelServer, far_end: FarEnd, receiver: Receiver
) -> None:
    model.script(Turn("The caller asked about a bill."))

    def said() -> list[dict[str, Any]]:
        return [
            e["params"]
            for e in receiver.events("/live")
            if e["params"]["state"] == "utterance" and e["params"]["final"]
        ]

    async with AsyncRestClient(llm_server.project, llm_server.token, llm_server.host) as client:
        leg = await client.calling.dial(
            from_="+15559876543", to=far_end.uri, swml=swml({"sleep": -1})
        )
        call_id = str(leg["id"])
        await asyncio.wait_for(far_end.answered.wait(), 10)
        await until(lambda: llm_server.call_status(call_id) == "answered", 5, "answered")
        # The client documentation's flat form (both sides when `direction` is omitted).
        await client.calling.live_transcribe(
            call_id, action="start", lang="en", webhook=receiver.url("/live")
        )
        with pytest.raises(RestError) as twice:
            await client.calling.live_transcribe(call_id, action="start", lang="en")
        assert twice.value.status_code == 409
        await far_end.silence(0.3)
        await far_end.play(say(SENTENCE))
        await far_end.silence(0.2)
        await until(said, 8, "the far end's utterance")
        # What the leg hears is the local caller: here callplane's own TTS.
        await client.calling.play(
            call_id, play=[{"type": "tts", "params": {"text": "One moment please."}}]
        )
        await until(lambda: len(said()) >= 2, 8, "the played utterance")
        await client.calling.live_transcribe(
            call_id, action={"summarize": {"webhook": receiver.url("/summary")}}
        )
        [summary] = await until(lambda: receiver.events("/summary"), 8, "the summary")
        await client.calling.live_transcribe(call_id, action="stop")
        await until(
            lambda: any(e["params"]["state"] == "finished" for e in receiver.events("/live")),
            8,
            "finished",
        )
        with pytest.raises(RestError) as none:
            await client.calling.live_transcribe(call_id, action="stop")
        assert none.value.status_code == 422
        await client.calling.end(call_id, reason="hangup")

    remote, local = said()
    assert remote["direction"] == "remote-caller" and local["direction"] == "local-caller"
    assert word_error_rate(SENTENCE, remote["text"]) <= 0.3, remote
    assert word_error_rate("one moment please", local["text"]) <= 0.34, local
    assert 0 < remote["start_ms"] < remote["end_ms"] < local["start_ms"] < local["end_ms"]
    assert remote["lang"] == "en" and remote["call_id"] == call_id
    assert summary["event_type"] == live.TRANSCRIBE_EVENT
    assert summary["params"]["summary"] == "The caller asked about a bill."
    transcript = model.requests[0].body["messages"][1]["content"]
    assert transcript.startswith("remote-caller: ") and "\nlocal-caller: " in transcript
    # The same events are in the call's event log.
    logged = stored(llm_server, call_id, live.TRANSCRIBE_EVENT)
    assert [p["text"] for p in logged if p["state"] == "utterance"] == [
        remote["text"],
        local["text"],
    ]


QUESTION = "what time does the shop open"
TRANSLATED = "We are open from nine to five."
INJECTED = "One moment please."


@requires_speech
async def test_swml_live_translate_on_a_bridge_and_inject(
    llm_server: Server,
    model: ModelServer,
    far_end: FarEnd,
    far_b: FarEnd,
    receiver: Receiver,
) -> None:
    model.script(Turn(TRANSLATED), Turn(INJECTED))
    document = swml(
        {
            "live_translate": {
                "action": {
                    "start": {
                        "from_lang": "en-US",
                        "to_lang": "en-GB",
                        "direction": ["remote-caller"],
                        "webhook": receiver.url("/live"),
                    }
                }
            }
        },
        {"connect": {"to": far_b.uri}},
    )
    async with AsyncRestClient(llm_server.project, llm_server.token, llm_server.host) as client:
        leg = await client.calling.dial(from_="+15559876543", to=far_end.uri, swml=document)
        call_id = str(leg["id"])
        await asyncio.wait_for(far_b.answered.wait(), 10)
        await far_end.silence(0.5)
        await far_end.play(say(QUESTION))
        await far_end.silence(0.3)
        translated = await until(
            lambda: [e for e in receiver.events("/live") if e["params"]["state"] == "translation"],
            8,
            "the translation",
        )
        heard_from = time.monotonic()
        await far_end.silence(2.6)
        heard_by_b = recognise(far_b.audio(heard_from - 0.5, heard_from + 2.6))
        a_meanwhile = rms_db(far_end.audio(heard_from, heard_from + 2.0))
        # The client's verbatim start reaches the engine: one translation per call.
        with pytest.raises(RestError) as twice:
            await client.calling.live_translate(
                call_id, action="start", from_lang="en", to_lang="es"
            )
        assert twice.value.status_code == 409
        await client.calling.live_translate(
            call_id, action={"inject": {"message": "Un momento", "direction": "remote-caller"}}
        )
        await until(lambda: len(model.requests) >= 2, 5, "the injected translation")
        injected_at = time.monotonic()
        await far_end.silence(1.8)
        heard_by_a = recognise(far_end.audio(injected_at - 0.3, injected_at + 1.8))
        b_meanwhile = rms_db(far_b.audio(injected_at, injected_at + 1.5))
        await client.calling.end(call_id, reason="hangup")
        await until(
            lambda: any(e["params"]["state"] == "finished" for e in receiver.events("/live")),
            8,
            "finished",
        )

    params = translated[0]["params"]
    assert word_error_rate(QUESTION, params["text"]) <= 0.34, params
    assert params["translation"] == TRANSLATED and params["spoken_to"] != call_id
    system = model.requests[0].body["messages"][0]["content"]
    assert "from en-US into en-GB" in system
    assert word_error_rate("we are open from nine to five", heard_by_b) <= 0.34, heard_by_b
    assert word_error_rate("one moment please", heard_by_a) <= 0.34, heard_by_a
    # Each translation went to one side only.
    assert a_meanwhile < -50 and b_meanwhile < -50, (a_meanwhile, b_meanwhile)
    assert model.requests[1].body["messages"][1]["content"] == "Un momento"


async def test_a_recognizer_that_fails_ends_the_session_with_error() -> None:
    class Broken(ScriptedRecognizer):
        def open_session(self, language: str | None = "en-US", **kw: Any) -> ScriptedSession:
            raise AsrError("the model is missing")

    events = Events()
    media = TickSession()
    call = tick_call(media)
    start = {"lang": "en-US", "direction": ["remote-caller", "local-caller"]}
    await command("calling.live_transcribe")(
        services(events, Broken()), call, {"action": {"start": start}}
    )
    op = next(iter(call.operations.values()))
    media.tick()
    media.tick()
    assert await asyncio.wait_for(asyncio.shield(op.done), 5) == "error"
    assert events.states() == ["started", "error"]
    assert "the model is missing" in events.of("error")[0]["error"]
    assert call.operations == {} and media.listeners == []


async def test_swml_forms_bare_summarize_and_errors_that_let_the_script_go_on() -> None:
    events = Events()
    svc = services(events, ScriptedRecognizer())
    media = TickSession()
    call = tick_call(media)
    method = live.SWML_METHODS["live_transcribe"]
    # SWML's default direction is both sides.
    assert await method(svc, call, {"action": {"start": {"lang": "en-US"}}}) is None
    assert events.of("started")[0]["direction"] == ["remote-caller", "local-caller"]
    await method(svc, call, {"action": {"start": {"lang": "en-US"}}})  # 409: logged only
    await method(svc, call, {"action": "summarize"})
    await until(lambda: events.of("summary"), 5, "the summary")
    await method(svc, call, {"action": "stop"})
    op = next(iter(call.operations.values()))
    assert await asyncio.wait_for(asyncio.shield(op.done), 5) == "finished"
    await method(svc, call, {"action": "stop"})  # none running: logged only
    assert events.states() == ["started", "summary", "finished"]
    with pytest.raises(SwmlMethodNotSupported):
        await live.SWML_METHODS["live_translate"](
            services(events, None), call, {"action": {"start": {"from_lang": "en"}}}
        )
    # A malformed action is logged and the script goes on.
    assert await live.SWML_METHODS["live_transcribe"](svc, call, {"action": {}}) is None
