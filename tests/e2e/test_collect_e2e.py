"""`calling.collect` and SWML `prompt` against the real server: digits sent by a real far end as
RFC 4733 events (the test's own UA and sipp's RFC 2833 pcaps) and as in-band tones, with the
results read from the `calling.call.collect` webhooks and from the variables a script reports."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import requires_sipp
from farend import FarEnd
from harness import LOOPBACK, Receiver, Server, Sipp, swml, until
from speech import requires_speech
from ticks import Emitted, TickSession, tick_call, tick_services

from callplane import AsyncRestClient, RestError
from callplane.engine.operations.collect import (
    CollectOperation,
    DigitsConfig,
    SpeechConfig,
    start_collect,
)
from callplane.media.dsp.dtmf import dtmf_digits
from callplane.providers.tts import FliteTts

ASSETS = Path(__file__).parent / "collect_assets"
COLLECT = "calling.call.collect"


def results(receiver: Receiver, path: str, control_id: str | None = None) -> list[dict[str, Any]]:
    """The params of the collect webhooks at `path` (one collect's, when `control_id` is given)."""
    return [
        e["params"]
        for e in receiver.events(path, COLLECT)
        if control_id is None or e["params"]["control_id"] == control_id
    ]


async def wait_results(
    receiver: Receiver, path: str, count: int, control_id: str | None = None, within: float = 10
) -> list[dict[str, Any]]:
    await until(
        lambda: len(results(receiver, path, control_id)) >= count,
        within,
        f"{count} collect events at {path} (saw {results(receiver, path, control_id)})",
    )
    return results(receiver, path, control_id)


def digit(digits: str, terminator: str) -> dict[str, Any]:
    return {"type": "digit", "params": {"digits": digits, "terminator": terminator}}


async def dial_far_end(client: AsyncRestClient, server: Server, far_end: FarEnd) -> str:
    leg = await client.calling.dial(from_="+15559876543", to=far_end.uri, swml=swml({"sleep": -1}))
    await asyncio.wait_for(far_end.answered.wait(), 10)
    await until(lambda: server.call_status(leg["id"]) == "answered", 5, "answered")
    return str(leg["id"])


async def test_rfc4733_digits_up_to_the_terminator(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        call_id = await dial_far_end(client, server, far_end)
        await client.calling.collect(
            call_id,
            control_id="pin",
            digits={"max": 8, "terminators": "#", "digit_timeout": 3},
            send_start_of_input=True,
            status_url=receiver.url("/collect"),
        )
        await far_end.send_digits("123#")
        events = await wait_results(receiver, "/collect", 2)
        await asyncio.sleep(0.3)  # nothing after the result
        assert [e["result"] for e in results(receiver, "/collect")] == [
            {"type": "start_of_input", "params": {}},
            digit("123", "#"),
        ]
        for event in events:
            assert event["control_id"] == "pin"
            assert event["call_id"] == call_id
            assert event["node_id"]
            # Neither continuous nor partial_results: no `state`, no `final`.
            assert "state" not in event and "final" not in event
        envelope = receiver.events("/collect")[-1]
        assert envelope["event_type"] == COLLECT
        assert envelope["project_id"] == server.project
        # The collect is over: it is no longer addressable.
        with pytest.raises(RestError) as gone:
            await client.calling.collect_stop(call_id, control_id="pin")
        assert gone.value.status_code == 422
        await client.calling.end(call_id)


async def test_max_digits_digit_timeout_and_default_terminator(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    url = receiver.url("/collect")
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        call_id = await dial_far_end(client, server, far_end)
        await client.calling.collect(call_id, control_id="max", digits={"max": 3}, status_url=url)
        await far_end.send_digits("4567")
        assert [e["result"] for e in await wait_results(receiver, "/collect", 1, "max")] == [
            digit("456", "")
        ]
        # Terminators disabled: '#' is an ordinary key and the inter-digit timer ends the input.
        await client.calling.collect(
            call_id,
            control_id="timeout",
            digits={"max": 5, "terminators": "", "digit_timeout": 1.0},
            status_url=url,
        )
        await far_end.send_digits("8#")
        sent = time.monotonic()
        events = await wait_results(receiver, "/collect", 1, "timeout")
        waited = time.monotonic() - sent
        assert [e["result"] for e in events] == [digit("8#", "")]
        assert 0.8 <= waited <= 2.0
        # Terminators left out: '#' ends the input (REST default).
        await client.calling.collect(
            call_id, control_id="default", digits={"max": 4}, status_url=url
        )
        await far_end.send_digits("9#")
        assert [e["result"] for e in await wait_results(receiver, "/collect", 1, "default")] == [
            digit("9", "#")
        ]
        await client.calling.end(call_id)


async def test_in_band_dtmf_and_no_double_count_with_rfc4733(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    url = receiver.url("/collect")
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        call_id = await dial_far_end(client, server, far_end)
        await client.calling.collect(
            call_id,
            control_id="tones",
            digits={"max": 10, "terminators": "#"},
            status_url=url,
        )
        await far_end.silence(0.2)
        await far_end.play(dtmf_digits("2580*#"))
        assert [e["result"] for e in await wait_results(receiver, "/collect", 1, "tones")] == [
            digit("2580*", "#")
        ]
        # One key press sent both ways at once (as some gateways do) counts once; the same key
        # pressed again, once per path, still counts twice.
        await client.calling.collect(
            call_id,
            control_id="both",
            digits={"max": 3, "terminators": "", "digit_timeout": 1.5},
            status_url=url,
        )
        await asyncio.gather(far_end.play(dtmf_digits("7")), far_end.send_digits("7", gap_ms=0))
        await far_end.silence(0.3)
        await far_end.send_digits("7")
        await far_end.silence(0.2)
        await far_end.play(dtmf_digits("7"))
        assert [e["result"] for e in await wait_results(receiver, "/collect", 1, "both")] == [
            digit("777", "")
        ]
        await client.calling.end(call_id)


async def test_initial_timer_waits_for_start_input_timers(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    url = receiver.url("/collect")
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        call_id = await dial_far_end(client, server, far_end)
        started = time.monotonic()
        await client.calling.collect(
            call_id,
            control_id="now",
            initial_timeout=1.0,
            start_input_timers=True,
            digits={"max": 2},
            status_url=url,
        )
        # start_input_timers defaults to false (reference §9 #22): this one waits.
        await client.calling.collect(
            call_id, control_id="later", initial_timeout=1.0, digits={"max": 2}, status_url=url
        )
        events = await wait_results(receiver, "/collect", 1, "now")
        assert [e["result"] for e in events] == [{"type": "no_input", "params": {}}]
        assert 0.9 <= time.monotonic() - started <= 2.0
        await asyncio.sleep(1.5)
        assert results(receiver, "/collect", "later") == []
        timers_at = time.monotonic()
        await client.calling.collect_start_input_timers(call_id, control_id="later")
        events = await wait_results(receiver, "/collect", 1, "later")
        assert [e["result"] for e in events] == [{"type": "no_input", "params": {}}]
        assert 0.9 <= time.monotonic() - timers_at <= 2.0
        with pytest.raises(RestError) as unknown:
            await client.calling.collect_start_input_timers(call_id, control_id="nope")
        assert unknown.value.status_code == 422
        await client.calling.end(call_id)


async def test_continuous_collect_stop_and_call_end(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    url = receiver.url("/collect")
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        call_id = await dial_far_end(client, server, far_end)
        await client.calling.collect(
            call_id,
            control_id="menu",
            digits={"max": 2},
            continuous=True,
            partial_results=True,
            status_url=url,
        )
        await far_end.send_digits("12")
        await far_end.send_digits("34")
        await wait_results(receiver, "/collect", 2, "menu")
        await client.calling.collect_stop(call_id, control_id="menu")
        events = await wait_results(receiver, "/collect", 3, "menu")
        assert [(e["result"], e["state"], e["final"]) for e in events] == [
            (digit("12", ""), "collecting", True),
            (digit("34", ""), "collecting", True),
            ({"type": "finished", "params": {}}, "finished", True),
        ]
        # Stopping a one-shot collect mid-input reports `finished`, not the partial digits.
        await client.calling.collect(
            call_id, control_id="once", digits={"max": 3, "digit_timeout": 5}, status_url=url
        )
        await far_end.send_digits("5")
        await client.calling.collect_stop(call_id, control_id="once")
        events = await wait_results(receiver, "/collect", 1, "once")
        assert [e["result"] for e in events] == [{"type": "finished", "params": {}}]
        # A collect still running when the call ends is finished (and stops listening).
        await client.calling.collect(call_id, control_id="left", digits={"max": 3}, status_url=url)
        await client.calling.end(call_id)
        events = await wait_results(receiver, "/collect", 1, "left")
        assert [e["result"] for e in events] == [{"type": "finished", "params": {}}]
        with pytest.raises(RestError) as ended:
            await client.calling.collect(call_id, control_id="late", digits={"max": 1})
        assert ended.value.status_code == 422


@requires_sipp
async def test_sipp_rfc2833_pcaps(server: Server, receiver: Receiver, tmp_path: Path) -> None:
    sipp = Sipp(["-sf", str(ASSETS / "uas_pcap_digits.xml"), "-m", "1"]).start(tmp_path)
    try:
        async with AsyncRestClient(server.project, server.token, server.host) as client:
            leg = await client.calling.dial(
                from_="+15559876543",
                to=f"sip:bob@{sipp.uri_host}",
                swml=swml({"sleep": -1}),
                status_url=receiver.url("/status"),
                status_events=["answered"],
            )
            await until(lambda: "answered" in receiver.call_states("/status", leg["id"]))
            # sipp waits 2 s after the ACK before its first key.
            await client.calling.collect(
                leg["id"],
                control_id="pcap",
                digits={"max": 10, "terminators": "#"},
                status_url=receiver.url("/collect"),
            )
            events = await wait_results(receiver, "/collect", 1, within=15)
            assert [e["result"] for e in events] == [digit("2468*", "#")]
            await client.calling.end(leg["id"])
        assert await asyncio.to_thread(sipp.wait, 20) == 0
    finally:
        sipp.stop()


@requires_sipp
async def test_swml_prompt_on_an_inbound_call_with_barge_in(
    make_server: Any, receiver: Receiver, tmp_path: Path
) -> None:
    long_prompt = "say:" + " ".join(["Please enter your account number, then press pound."] * 4)
    receiver.serve_swml(
        "/menu",
        swml(
            {
                "prompt": {
                    "play": [long_prompt, "silence:10"],
                    "max_digits": 5,
                    "terminators": "#",
                    "status_url": receiver.url("/prompt"),
                }
            },
            {
                "request": {
                    "url": receiver.url("/vars"),
                    "method": "POST",
                    "body": {
                        "result": "${prompt_result}",
                        "value": "${prompt_value}",
                        "terminator": "${prompt_digit_terminator}",
                    },
                }
            },
            {"hangup": {}},
        ),
    )
    server: Server = make_server(routes={"menu": receiver.url("/menu")})
    server_sip = f"{LOOPBACK}:{server.sip_port}"
    sipp = Sipp(
        ["-sf", str(ASSETS / "uac_prompt_digits.xml"), "-s", "menu", "-m", "1", server_sip]
    ).start(tmp_path)
    try:
        started = time.monotonic()
        # The prompt would speak for well over 10 s; the keys pressed ~1 s after the answer stop
        # it (barge-in) and the script moves on as soon as '#' arrives.
        assert await asyncio.to_thread(sipp.wait, 30) == 0
        assert time.monotonic() - started < 8
        hit = await until(lambda: next((h for h in receiver.hits if h.path == "/vars"), None))
        assert hit.body == {"result": "match_digits", "value": "13", "terminator": "#"}
        events = results(receiver, "/prompt")
        assert [e["result"] for e in events] == [digit("13", "#")]
        assert events[0]["control_id"].startswith("swml-prompt-")
    finally:
        sipp.stop()


async def test_swml_prompt_in_band_digits_then_no_input(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    def report(path: str) -> dict[str, Any]:
        return {
            "request": {
                "url": receiver.url(path),
                "method": "POST",
                "body": {
                    "result": "${prompt_result}",
                    "value": "${prompt_value}",
                    "terminator": "${prompt_digit_terminator}",
                },
            }
        }

    document = swml(
        {"prompt": {"play": "say:Press two keys.", "max_digits": 2}},
        report("/first"),
        {"prompt": {"play": "silence:0.5", "initial_timeout": 1}},
        report("/second"),
        {"hangup": {}},
    )
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        leg = await client.calling.dial(from_="+15559876543", to=far_end.uri, swml=document)
        await asyncio.wait_for(far_end.answered.wait(), 10)
        answered = time.monotonic()
        # Keys pressed before the prompt runs would reach no collect: wait until it is heard
        # (flite takes a while on a loaded machine).
        await until(lambda: far_end.loud_packets(answered), 10, "the prompt")
        await far_end.play(dtmf_digits("42"))
        first = await until(lambda: next((h for h in receiver.hits if h.path == "/first"), None))
        assert first.body == {"result": "match_digits", "value": "42", "terminator": ""}
        second = await until(lambda: next((h for h in receiver.hits if h.path == "/second"), None))
        assert second.body == {"result": "no_input", "value": "", "terminator": ""}
        await until(lambda: server.call_status(leg["id"]) == "ended", 10, "the script's hangup")


@requires_speech
async def test_speech_collect_recognises_a_hinted_word(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    word = await FliteTts().synthesize("support")
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        call_id = await dial_far_end(client, server, far_end)
        await client.calling.collect(
            call_id,
            control_id="ask",
            speech={"hints": ["sales", "support", "billing"], "end_silence_timeout": 0.8},
            start_input_timers=True,
            initial_timeout=5,
            send_start_of_input=True,
            status_url=receiver.url("/speech"),
        )
        await far_end.silence(0.5)
        await far_end.play(word)
        await far_end.silence(1.5)
        events = await wait_results(receiver, "/speech", 2)
        assert [e["result"]["type"] for e in events] == ["start_of_input", "speech"]
        speech = events[1]["result"]["params"]
        assert speech["text"] == "support"
        assert 0.5 <= speech["confidence"] <= 1.0
        # A language callplane has no model for is refused, not silently unheard.
        with pytest.raises(RestError) as french:
            await client.calling.collect(call_id, control_id="fr", speech={"language": "fr-FR"})
        assert french.value.status_code == 501
        await client.calling.end(call_id)


@requires_speech
async def test_swml_prompt_speech_with_barge_in(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    word = await FliteTts().synthesize("billing")
    document = swml(
        {
            "prompt": {
                "play": "say:" + " ".join(["Please say sales, support or billing."] * 4),
                "speech_hints": ["sales", "support", "billing"],
                "speech_end_timeout": 0.8,
            }
        },
        {
            "request": {
                "url": receiver.url("/vars"),
                "method": "POST",
                "body": {
                    "result": "${prompt_result}",
                    "value": "${prompt_value}",
                    "confidence": "${prompt_speech_confidence}",
                },
            }
        },
        {"hangup": {}},
    )
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        leg = await client.calling.dial(from_="+15559876543", to=far_end.uri, swml=document)
        await asyncio.wait_for(far_end.answered.wait(), 10)
        answered = time.monotonic()
        await far_end.silence(0.8)
        await far_end.play(word)
        await far_end.silence(1.5)
        hit = await until(lambda: next((h for h in receiver.hits if h.path == "/vars"), None))
        # The spoken prompt lasts ~10 s; the answer came while it was still speaking.
        assert time.monotonic() - answered < 6
        assert hit.body["result"] == "match_speech"
        assert hit.body["value"] == "billing"
        assert 0.5 <= float(hit.body["confidence"]) <= 1.0
        await until(lambda: server.call_status(leg["id"]) == "ended", 10, "the script's hangup")


@requires_speech
async def test_speech_collect_ends_when_the_far_end_stops_sending_rtp(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    """Bug: the far end spoke, then sent no RTP at all: the collect never ended (the recognizer
    heard no silence, so its end-of-speech timer never ran). It must end within its
    end-of-speech timeout + 1 s."""
    word = await FliteTts().synthesize("support")
    end_silence = 0.8
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        call_id = await dial_far_end(client, server, far_end)
        await client.calling.collect(
            call_id,
            control_id="mute",
            speech={"hints": ["sales", "support", "billing"], "end_silence_timeout": end_silence},
            start_input_timers=True,
            initial_timeout=5,
            send_start_of_input=True,
            status_url=receiver.url("/mute"),
        )
        await far_end.silence(0.5)
        await far_end.play(word)
        stopped = time.monotonic()  # and from here on, not one RTP packet more
        events = await wait_results(receiver, "/mute", 2, within=end_silence + 1.0)
        took = time.monotonic() - stopped
        assert events[0]["result"]["type"] == "start_of_input"
        assert events[1]["result"]["type"] in ("speech", "no_match"), events
        assert took <= end_silence + 1.0, took
        await client.calling.end(call_id)


# -- in process, driven by TickFrames alone --------------------------------------------------


def ticking_collect(**kwargs: Any) -> tuple[TickSession, CollectOperation, Emitted]:
    session = TickSession()
    call = tick_call(session)
    emitted = Emitted()
    op = start_collect(tick_services(emitted), call, control_id="c", status_url=None, **kwargs)
    return session, op, emitted


def collected(emitted: Emitted) -> list[dict[str, Any]]:
    return [p["result"] for p in emitted.params("collect")]


async def test_digit_and_initial_timeouts_count_ticks() -> None:
    session, op, emitted = ticking_collect(
        digits=DigitsConfig(max=4, terminators="#", digit_timeout=1.0),
        speech=None,
        initial_timeout=0.5,
        start_input_timers=True,
    )
    session.silence(0.48)
    assert collected(emitted) == []
    op.call.dispatch_dtmf("1", 100)  # input began: the initial timer stops
    session.silence(0.5)
    op.call.dispatch_dtmf("2", 100)
    session.silence(0.98)
    assert collected(emitted) == [] and op.state == "collecting"
    session.tick()  # the 50th tick since the last digit
    assert collected(emitted) == [digit("12", "")] and op.state == "finished"
    assert len(session.listeners) == 1  # only the call's KeyPresses is left

    session, op, emitted = ticking_collect(
        digits=DigitsConfig(max=4, terminators="#", digit_timeout=1.0),
        speech=None,
        initial_timeout=0.5,
        start_input_timers=True,
    )
    session.silence(0.48)
    session.tick()
    assert collected(emitted) == [{"type": "no_input", "params": {}}]


@requires_speech
async def test_ticks_alone_end_a_speech_collect_after_the_far_end_goes_silent() -> None:
    """Speech, then ticks where nothing arrived: the recognizer hears them as silence and
    ends the utterance on its end-of-speech timer, counted in ticks."""
    from callplane.providers.asr import PocketSphinxRecognizer

    word = await FliteTts().synthesize("billing")
    audio = np.concatenate([np.zeros(4000, np.int16), word, np.zeros((-word.size) % 160, np.int16)])
    session, op, emitted = ticking_collect(
        digits=None,
        speech=SpeechConfig(end_silence_timeout=0.8, hints=("sales", "support", "billing")),
        initial_timeout=5.0,
        start_input_timers=True,
        send_start_of_input=True,
        recognizer=PocketSphinxRecognizer(),
    )
    for _ in range(200):  # the recognizer's session opens in a thread
        if op._recognition is not None:
            break
        await asyncio.sleep(0.02)
    session.ticks(audio.reshape(-1, 160))
    ticks = 0
    while op.state == "collecting" and ticks < 150:  # 3 s of ticks at most
        session.tick()  # nothing arrived
        ticks += 1
        await asyncio.sleep(0.005)  # decoding runs in a thread: let its events in
    assert op.state == "finished", collected(emitted)
    results = collected(emitted)
    assert [r["type"] for r in results] == ["start_of_input", "speech"]
    assert results[1]["params"]["text"] == "billing"
    assert ticks <= round((0.8 + 1.0) * 50), ticks
