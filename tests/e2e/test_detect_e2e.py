"""`calling.detect` and SWML `detect_machine` against the real server: the far end (a SIP UA in the
test process) sends real PCMU audio — flite speech, a voicemail beep, fax CNG bursts, in-band DTMF
— and RFC 4733 events; the server's detectors report to a webhook receiver."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import numpy as np
import pytest
from farend import FarEnd
from harness import Receiver, Server, swml, wait_until
from ticks import Emitted, TickSession, tick_call

from callplane import AsyncRestClient, RestError
from callplane.engine.keypad import KeyPresses
from callplane.engine.operations.base import register
from callplane.engine.operations.detect import DetectOperation, _amd
from callplane.media.dsp import FaxToneDetector, dtmf_digits

# The DSP tests' audio helpers (flite speech trimmed and levelled, sines, silence).
sys.path.insert(0, str(Path(__file__).parents[1] / "media" / "dsp"))
from dsp_audio import HELLO, concat, flite, needs_flite, silence, sine

# Long enough for MACHINE (machine_voice_threshold 1.25 s), short enough for a quick test.
GREETING = "Hi, you have reached John Smith. Please leave a message after the tone."
FROM = "+15559876543"


def pcm(x: np.ndarray) -> np.ndarray:
    """Float samples to int16, padded to whole 20 ms frames (what FarEnd.play sends)."""
    x = np.concatenate([np.asarray(x, dtype=np.float64), np.zeros((-len(x)) % 160)])
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def cng(bursts: int) -> np.ndarray:
    """T.30 calling tone: 1100 Hz, 0.5 s on, 3 s off."""
    return concat(*[concat(sine(1100, 0.5, -20), silence(3.0)) for _ in range(bursts)])


async def answered_call(client: AsyncRestClient, server: Server, far_end: FarEnd) -> str:
    leg = await client.calling.dial(from_=FROM, to=far_end.uri, swml=swml({"sleep": -1}))
    await asyncio.wait_for(far_end.answered.wait(), 10)
    await asyncio.to_thread(server.wait_status, leg["id"], "answered")
    return str(leg["id"])


async def wait_events(receiver: Receiver, path: str, what: str = "finished") -> list[str]:
    """Wait for the detect webhook whose event is `what`; return every event name so far."""

    def names() -> list[str]:
        return [e["params"]["detect"]["params"]["event"] for e in receiver.events(path)]

    await asyncio.to_thread(wait_until, lambda: what in names(), 15, f"{what} on {path}")
    await asyncio.sleep(0.3)  # anything wrongly sent after it would show up by now
    return names()


def detect_params(receiver: Receiver, path: str) -> list[dict[str, Any]]:
    return [e["params"]["detect"] for e in receiver.events(path)]


@needs_flite
async def test_human_hello_is_human_then_finished(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        call_id = await answered_call(client, server, far_end)
        await client.calling.detect(
            call_id,
            control_id="amd1",
            detect={"type": "machine", "params": {}},
            status_url=receiver.url("/amd"),
        )
        hello = flite(HELLO, voice="slt")
        started = time.time()
        await far_end.play(pcm(concat(silence(0.3), hello, silence(1.6))))
        names = await wait_events(receiver, "/amd")
        await client.calling.end(call_id)
    assert names == ["HUMAN", "finished"]
    events = receiver.events("/amd")
    assert all(e["event_type"] == "calling.call.detect" for e in events)
    first = events[0]["params"]
    assert set(first) == {"call_id", "node_id", "control_id", "segment_id", "detect"}
    assert first["call_id"] == call_id and first["control_id"] == "amd1"
    assert detect_params(receiver, "/amd") == [
        {"type": "machine", "params": {"event": "HUMAN"}},
        {"type": "machine", "params": {"event": "finished"}},
    ]
    # HUMAN = end_silence_timeout (1 s) after the word: never before the word is over.
    word_end = started + 0.3 + len(hello) / 8000
    assert word_end + 0.8 <= events[0]["timestamp"] <= word_end + 1.6


@needs_flite
async def test_voicemail_greeting_and_beep_is_machine_then_ready_with_beep(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        call_id = await answered_call(client, server, far_end)
        await client.calling.detect(
            call_id,
            control_id="vm",
            detect={"type": "machine"},  # REST: detect_message_end defaults to true
            status_url=receiver.url("/amd"),
        )
        greeting = flite(GREETING, voice="slt")
        await far_end.play(
            pcm(concat(silence(0.3), greeting, silence(0.3), sine(1000, 0.4, -18), silence(0.6)))
        )
        names = await wait_events(receiver, "/amd")
        await client.calling.end(call_id)
    assert names == ["MACHINE", "READY", "finished"]
    assert detect_params(receiver, "/amd") == [
        {"type": "machine", "params": {"event": "MACHINE"}},
        {"type": "machine", "params": {"event": "READY", "beep": True}},
        {"type": "machine", "params": {"event": "finished"}},
    ]


@pytest.mark.parametrize("wait_for_beep", [False, True])
async def test_wait_for_beep_holds_ready_until_the_beep(
    server: Server, receiver: Receiver, far_end: FarEnd, wait_for_beep: bool
) -> None:
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        call_id = await answered_call(client, server, far_end)
        await client.calling.detect(
            call_id,
            control_id="vm",
            detect={"type": "machine", "params": {"wait_for_beep": wait_for_beep}},
            status_url=receiver.url("/amd"),
        )
        # The greeting ends, 1.5 s of silence (longer than end_silence_timeout), then the beep.
        greeting = flite(GREETING, voice="slt")
        await far_end.play(
            pcm(concat(silence(0.3), greeting, silence(1.5), sine(1000, 0.4, -18), silence(0.6)))
        )
        await wait_events(receiver, "/amd")
        await client.calling.end(call_id)
    ready = [p for p in detect_params(receiver, "/amd") if p["params"]["event"] == "READY"]
    # Without waiting, READY comes at the silence, with no beep heard yet; with it, at the beep.
    assert ready == [{"type": "machine", "params": {"event": "READY", "beep": wait_for_beep}}]


async def test_silence_is_unknown_after_initial_timeout(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        call_id = await answered_call(client, server, far_end)
        sent = time.time()
        # The far end sends no RTP at all (as with silence suppression): the timers still run.
        await client.calling.detect(
            call_id,
            control_id="quiet",
            detect={"type": "machine", "params": {"initial_timeout": 1.5}},
            status_url=receiver.url("/amd"),
        )
        names = await wait_events(receiver, "/amd")
        await client.calling.end(call_id)
    assert names == ["UNKNOWN", "finished"]
    assert 1.3 <= receiver.events("/amd")[0]["timestamp"] - sent <= 2.5


async def test_fax_cng_with_tone_filter_and_timeout(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        call_id = await answered_call(client, server, far_end)
        # Two detectors on one call: any fax tone, and only CED (which never comes).
        await client.calling.detect(
            call_id,
            control_id="fax-any",
            detect={"type": "fax", "params": {}},
            status_url=receiver.url("/fax-any"),
        )
        await client.calling.detect(
            call_id,
            control_id="fax-ced",
            detect={"type": "fax", "params": {"tone": "ced"}},
            timeout=2.5,
            status_url=receiver.url("/fax-ced"),
        )
        await far_end.play(pcm(concat(silence(0.2), cng(1)[: 8000 * 1])))
        any_names = await wait_events(receiver, "/fax-any")
        ced_names = await wait_events(receiver, "/fax-ced")
        await client.calling.end(call_id)
    assert any_names == ["CNG", "finished"]
    assert detect_params(receiver, "/fax-any") == [
        {"type": "fax", "params": {"event": "CNG"}},
        {"type": "fax", "params": {"event": "finished"}},
    ]
    assert ced_names == ["finished"]  # the timeout, with nothing heard


async def test_digits_from_rfc4733_and_in_band_filtered_and_deduplicated(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        call_id = await answered_call(client, server, far_end)
        await client.calling.detect(
            call_id,
            control_id="keys",
            detect={"type": "digit", "params": {"digits": "129#"}},
            status_url=receiver.url("/dtmf"),
        )
        await far_end.send_digits("15")  # RFC 4733; 5 is not wanted
        await far_end.play(pcm(concat(silence(0.2), dtmf_digits("2#4"), silence(0.2))))
        # One press sent both ways at once (a gateway leaving the tone in the audio): one digit.
        await asyncio.gather(far_end.play(pcm(dtmf_digits("9"))), far_end.send_digits("9"))
        await far_end.silence(0.5)
        await client.calling.detect_stop(call_id, control_id="keys")
        names = await wait_events(receiver, "/dtmf")
        with pytest.raises(RestError) as gone:
            await client.calling.detect_stop(call_id, control_id="keys")
        await client.calling.end(call_id)
    assert names == ["1", "2", "#", "9", "finished"]
    assert {d["type"] for d in detect_params(receiver, "/dtmf")} == {"digit"}
    assert gone.value.status_code == 422


async def test_stop_an_undecided_machine_detect_and_control_id_rules(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        call_id = await answered_call(client, server, far_end)
        await client.calling.detect(
            call_id,
            control_id="d1",
            detect={"type": "machine", "params": {}},
            status_url=receiver.url("/stop"),
        )
        with pytest.raises(RestError) as duplicate:
            await client.calling.detect(
                call_id, control_id="d1", detect={"type": "digit", "params": {}}
            )
        with pytest.raises(RestError) as unknown:
            await client.calling.detect_stop(call_id, control_id="nope")
        await client.calling.detect_stop(call_id, control_id="d1")
        names = await wait_events(receiver, "/stop")
        # A detect whose call ends is finished too (the engine stops its operations).
        await client.calling.detect(
            call_id,
            control_id="d2",
            detect={"type": "digit", "params": {}},
            status_url=receiver.url("/hangup"),
        )
        await client.calling.end(call_id)
        hangup_names = await wait_events(receiver, "/hangup")
    assert duplicate.value.status_code == 409
    assert unknown.value.status_code == 422
    assert names == ["UNKNOWN", "finished"]
    assert hangup_names == ["finished"]


@needs_flite
async def test_swml_detect_machine_sets_detect_result_human(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    document = swml(
        {"detect_machine": {"detectors": "amd,fax", "status_url": receiver.url("/swml-amd")}},
        {
            "request": {
                "url": receiver.url(
                    "/result?r=${detect_result}&beep=${detect_machine_beep}&ms=${detect_ms}"
                ),
                "method": "GET",
            }
        },
        {"sleep": -1},
    )
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        leg = await client.calling.dial(from_=FROM, to=far_end.uri, swml=document)
        await asyncio.wait_for(far_end.answered.wait(), 10)
        await far_end.play(pcm(concat(silence(0.3), flite(HELLO, voice="slt"), silence(1.6))))
        hit = await asyncio.to_thread(
            wait_until,
            lambda: next((h for h in receiver.hits if h.path == "/result"), None),
            10,
            "the SWML request with the result",
        )
        await client.calling.end(leg["id"])
    query = {k: v[0] for k, v in parse_qs(hit.query).items()}
    assert query["r"] == "human" and query["beep"] == "false"
    assert 1000 <= int(query["ms"]) <= 4000
    assert [d["params"]["event"] for d in detect_params(receiver, "/swml-amd")] == [
        "HUMAN",
        "finished",
    ]


async def test_swml_detect_machine_fax_in_background(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    # wait: false returns at once ("detecting"); the result lands in vars when it is known.
    # CNG beside AMD: the 1100 Hz burst also looks like a voicemail beep; fax must win.
    def result_request(path: str) -> dict[str, Any]:
        return {"request": {"url": receiver.url(f"{path}?r=${{detect_result}}"), "method": "GET"}}

    document = swml(
        {
            "detect_machine": {
                "detectors": "amd,fax",
                "tone": "CNG",
                "wait": False,
                "status_url": receiver.url("/swml-fax"),
            }
        },
        result_request("/early"),
        {"sleep": 2500},
        result_request("/late"),
        {"sleep": -1},
    )
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        leg = await client.calling.dial(from_=FROM, to=far_end.uri, swml=document)
        await asyncio.wait_for(far_end.answered.wait(), 10)
        await far_end.play(pcm(concat(silence(0.2), cng(1)[:8000])))
        late = await asyncio.to_thread(
            wait_until,
            lambda: next((h for h in receiver.hits if h.path == "/late"), None),
            10,
            "the late request",
        )
        await client.calling.end(leg["id"])
    early = next(h for h in receiver.hits if h.path == "/early")
    assert parse_qs(early.query)["r"] == ["detecting"]
    assert parse_qs(late.query)["r"] == ["fax"]
    assert detect_params(receiver, "/swml-fax") == [
        {"type": "fax", "params": {"event": "CNG"}},
        {"type": "machine", "params": {"event": "finished"}},
    ]


# -- in process, driven by TickFrames alone --------------------------------------------------


def ticking_detect(
    kind: str, timeout: float = 30.0, **detector: Any
) -> tuple[TickSession, DetectOperation, Emitted]:
    session = TickSession()
    call = tick_call(session)
    emitted = Emitted()
    op = DetectOperation(
        call,
        "d",
        None,
        emitted,
        finished_type=kind,
        amd=_amd({}, detect_message_end=True, timeout=timeout) if kind == "machine" else None,
        fax=FaxToneDetector(None) if kind == "fax" else None,
        digits=detector.get("digits"),
        timeout=timeout,
    )
    register(call, op)
    op.start()
    return session, op, emitted


def detected(emitted: Emitted) -> list[str]:
    return [p["detect"]["params"]["event"] for p in emitted.params("detect")]


@needs_flite
async def test_ticks_decide_machine_then_ready_when_the_far_end_goes_silent() -> None:
    """A greeting, then the far end sends nothing at all (ticks with heard False): MACHINE
    1.25 s into the greeting, READY after its end-silence, on the tick clock."""
    session, op, emitted = ticking_detect("machine")
    greeting = pcm(concat(silence(0.5), flite(GREETING)))
    session.ticks(greeting.reshape(-1, 160))
    assert detected(emitted) == ["MACHINE"]
    assert op.result == "machine" and 1700 <= (op.result_ms or 0) <= 1900
    session.silence(1.1)  # end_silence_timeout 1.0 s, counted in ticks
    assert detected(emitted) == ["MACHINE", "READY", "finished"]
    assert op.state == "finished" and session.listeners == []


@needs_flite
async def test_ticks_decide_human() -> None:
    session, op, emitted = ticking_detect("machine")
    session.ticks(pcm(concat(silence(0.6), flite(HELLO))).reshape(-1, 160))
    session.silence(1.2)
    assert detected(emitted) == ["HUMAN", "finished"]
    assert op.result == "human"


async def test_the_timeout_counts_ticks_not_wall_time() -> None:
    session, op, emitted = ticking_detect("machine", timeout=1.0)
    session.silence(0.98)
    assert op.state == "detecting" and detected(emitted) == []
    session.tick()  # the 50th tick
    assert detected(emitted) == ["UNKNOWN", "finished"] and op.result_ms == 1000


async def test_key_presses_find_in_band_digits_at_their_tick() -> None:
    """KeyPresses' clock is the tick: an in-band digit is reported within 40 ms (2 ticks) of
    its tone starting, and the RFC 4733 copy of the same press is dropped."""
    session, op, emitted = ticking_detect("digit", digits="")
    keypad = KeyPresses.for_call(op.call)
    reported_at: list[tuple[str, int]] = []
    keypad.subscribers.append(lambda d: reported_at.append((d, session.tick_number - 1)))
    tones = pcm(concat(silence(0.2), dtmf_digits("5", tone=0.1, gap=0.1))).reshape(-1, 160)
    start = session.tick_number + 10  # the tone starts in the 11th tick
    session.ticks(tones)
    [(digit, at)] = reported_at
    assert digit == "5" and start <= at <= start + 2
    op.call.dispatch_dtmf("5", 100)  # the same key press, reported at its release
    session.silence(0.1)
    assert detected(emitted) == ["5"] and len(reported_at) == 1
    op.call.dispatch_dtmf("7", 100)  # another key, over RFC 4733 only
    assert detected(emitted) == ["5", "7"]
