"""Conferences over real SIP: SWML `join_conference` and `join_room` mixed on the media graph.

Each participant is a far end (callplane's own SIP stack in the test process, capturing the RTP
it receives) that callplane dials with a script joining the conference. What each far end hears
is checked by frequency: the other participants' tones, never its own.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile
from farend import FarEnd, peaks
from harness import LOOPBACK, Receiver, Server, swml
from harness import until as wait_for

from callplane import AsyncRestClient

TONES = (500, 1300, 2100)  # A, B, C; the enter/exit beep is 1000 Hz


@pytest.fixture
async def fars() -> AsyncIterator[list[FarEnd]]:
    ends = [FarEnd() for _ in range(3)]
    for far in ends:
        await far.start()
    yield ends
    for far in ends:
        await far.stop()


def tone(hz: float, seconds: float, level: float = 0.25) -> np.ndarray:
    t = np.arange(int(seconds * 8000)) / 8000
    return (level * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def wav(samples: np.ndarray) -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, samples, 8000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def power(samples: np.ndarray, hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    k = round(hz * len(samples) / 8000)
    return float(spectrum[max(0, k - 2) : k + 3].max())


def hears(samples: np.ndarray, *present: float, absent: tuple[float, ...] = ()) -> None:
    """Each `present` tone well above each `absent` one (by 30 dB)."""
    for hz in present:
        for quiet in absent:
            assert power(samples, hz) > 30 * power(samples, quiet), (hz, quiet, peaks(samples, 4))


def statuses(receiver: Receiver, path: str) -> list[tuple[str, int]]:
    return [
        (e["params"]["status"], e["params"]["size"])
        for e in receiver.events(path, "calling.conference")
    ]


async def test_three_participants_hear_the_others_a_beep_and_one_mixed_recording(
    server: Server, receiver: Receiver, fars: list[FarEnd]
) -> None:
    a, b, c = fars
    common = {"name": "mix", "beep": False}
    first = {
        **common,
        "status_callback": receiver.url("/conf"),
        "status_callback_event": "start end join leave",
        "record": "record-from-start",
        "recording_status_callback": receiver.url("/rec"),
        "trim": "do-not-trim",
    }
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        leg_a = await client.calling.dial(
            from_="+15551230000", to=a.uri, swml=swml({"join_conference": first})
        )
        await wait_for(lambda: ("participant-join", 1) in statuses(receiver, "/conf"), 10, "A")
        # B's entry beeps to those already in: A hears the 1000 Hz beep.
        leg_b = await client.calling.dial(
            from_="+15551230000",
            to=b.uri,
            swml=swml({"join_conference": {**common, "beep": "onEnter"}}),
        )
        await asyncio.wait_for(b.answered.wait(), 10)
        t_b = time.monotonic()
        await wait_for(lambda: ("participant-join", 2) in statuses(receiver, "/conf"), 10, "B")
        await asyncio.sleep(1.0)
        beep = a.audio(t_b, time.monotonic())
        assert [round(f / 10) * 10 for f in peaks(beep, 1)] == [1000]
        leg_c = await client.calling.dial(
            from_="+15551230000", to=c.uri, swml=swml({"join_conference": common})
        )
        await wait_for(lambda: ("participant-join", 3) in statuses(receiver, "/conf"), 10, "C")

        # The debug view lists the three participants.
        listed = (await asyncio.to_thread(server.get, "/api/calling/conferences")).json()["data"]
        assert [conf["name"] for conf in listed] == ["mix"] and listed[0]["size"] == 3
        conference_id = listed[0]["id"]
        one = await asyncio.to_thread(server.get, f"/api/calling/conferences/{conference_id}")
        ids = {p["call_id"] for p in one.json()["participants"]}
        assert ids == {leg_a["id"], leg_b["id"], leg_c["id"]}

        t0 = time.monotonic()
        await asyncio.gather(
            *(far.play(tone(hz, 1.6)) for far, hz in zip(fars, TONES, strict=True))
        )
        t1 = time.monotonic()
        for k, far in enumerate(fars):
            heard = far.audio(t0 + 0.4, t1)
            others = [hz for hz in TONES if hz != TONES[k]]
            hears(heard, *others, absent=(TONES[k],))

        for leg in (leg_c, leg_b, leg_a):
            await client.calling.end(leg["id"])
    await wait_for(lambda: ("conference-end", 0) in statuses(receiver, "/conf"), 10, "the end")
    assert statuses(receiver, "/conf") == [
        ("conference-start", 1),
        ("participant-join", 1),
        ("participant-join", 2),
        ("participant-join", 3),
        ("participant-leave", 2),
        ("participant-leave", 1),
        ("participant-leave", 0),
        ("conference-end", 0),
    ]
    events = receiver.events("/conf")
    assert {e["params"]["conference_id"] for e in events} == {conference_id}
    assert {e["params"]["name"] for e in events} == {"mix"}
    joins = [e["params"]["call_id"] for e in events if e["params"]["status"] == "participant-join"]
    assert joins == [leg_a["id"], leg_b["id"], leg_c["id"]]

    # The conference recording: the room's sum, all three tones, served like call recordings.
    await wait_for(lambda: len(receiver.events("/rec")) == 2, 10, "record-start and record-stop")
    start, stop = (e["params"] for e in receiver.events("/rec"))
    assert (start["status"], stop["status"]) == ("record-start", "record-stop")
    assert stop["recording_id"] == start["recording_id"] and stop["conference_id"] == conference_id
    assert stop["duration"] > 2 and stop["size"] > 1000
    async with httpx.AsyncClient(auth=(server.project, server.token), timeout=10) as http:
        got = await http.get(stop["url"])
    assert got.status_code == 200
    audio, rate = soundfile.read(io.BytesIO(got.content), dtype="float64")
    assert rate == 8000
    loud = np.flatnonzero(np.abs(audio) > 0.1)
    assert loud.size
    mixed = audio[loud[0] : loud[-1]]
    assert [round(f / 10) * 10 for f in peaks(mixed, 3)] == list(TONES)
    after = await asyncio.to_thread(server.get, f"/api/calling/conferences/{conference_id}")
    assert after.json()["status"] == "completed" and after.json()["size"] == 0


async def test_waiting_muted_and_end_on_exit(
    server: Server, receiver: Receiver, fars: list[FarEnd]
) -> None:
    a, b, c = fars
    hold = receiver.serve_file("/hold.wav", wav(tone(700, 2.0)), "audio/wav")
    # The script goes on after the conference.
    after = {"play": {"url": receiver.serve_file("/after.wav", wav(tone(900, 4.0)), "audio/wav")}}
    script_a = swml(
        {
            "join_conference": {
                "name": "waiting",
                "beep": False,
                "start_on_enter": False,
                "wait_url": hold,
                "status_callback": receiver.url("/conf"),
                "status_callback_event": "start end join leave",
            }
        },
        after,
    )
    script_b = swml(
        {"join_conference": {"name": "waiting", "beep": False, "end_on_exit": True}}, after
    )
    script_c = swml({"join_conference": {"name": "waiting", "beep": False, "muted": True}}, after)
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        await client.calling.dial(from_="+15551230000", to=a.uri, swml=script_a)
        await wait_for(lambda: ("participant-join", 1) in statuses(receiver, "/conf"), 10, "A")
        await asyncio.sleep(1.0)
        t = time.monotonic()
        await asyncio.sleep(0.8)
        assert [round(f / 10) * 10 for f in peaks(a.audio(t, time.monotonic()), 1)] == [700]
        assert statuses(receiver, "/conf") == [("participant-join", 1)]  # not started yet

        leg_b = await client.calling.dial(from_="+15551230000", to=b.uri, swml=script_b)
        await wait_for(lambda: ("conference-start", 2) in statuses(receiver, "/conf"), 10, "start")
        await client.calling.dial(from_="+15551230000", to=c.uri, swml=script_c)
        await wait_for(lambda: ("participant-join", 3) in statuses(receiver, "/conf"), 10, "C")
        t0 = time.monotonic()
        await asyncio.gather(
            *(far.play(tone(hz, 1.6)) for far, hz in zip(fars, TONES, strict=True))
        )
        t1 = time.monotonic()
        heard_a, heard_b, heard_c = (far.audio(t0 + 0.4, t1) for far in fars)
        hears(heard_a, 1300, absent=(500, 2100, 700))  # no more hold audio; C is muted
        hears(heard_b, 500, absent=(1300, 2100))
        hears(heard_c, 500, 1300, absent=(2100,))  # the muted one still hears

        # B ends the conference on exit: A's and C's scripts go on (a 900 Hz tone).
        await client.calling.end(leg_b["id"])
        await wait_for(lambda: ("conference-end", 0) in statuses(receiver, "/conf"), 10, "end")
        await asyncio.sleep(0.6)
        t2 = time.monotonic()
        await asyncio.sleep(0.8)
        for far in (a, c):
            following = far.audio(t2, time.monotonic())
            assert [round(f / 10) * 10 for f in peaks(following, 1)] == [900]
    assert [s for s, _ in statuses(receiver, "/conf")] == [
        "participant-join",
        "conference-start",
        "participant-join",
        "participant-join",
        "participant-leave",
        "participant-leave",
        "participant-leave",
        "conference-end",
    ]
    muted = [
        e["params"]["muted"]
        for e in receiver.events("/conf")
        if e["params"]["status"] == "participant-join"
    ]
    assert muted == [False, False, True]


async def test_a_coach_is_heard_only_by_the_one_coached_and_rooms_mix_too(
    server: Server, receiver: Receiver, fars: list[FarEnd]
) -> None:
    a, b, c = fars
    join = {
        "name": "coached",
        "beep": False,
        "status_callback": receiver.url("/conf"),
        "status_callback_event": "join",
    }
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        leg_a = await client.calling.dial(
            from_="+15551230000", to=a.uri, swml=swml({"join_conference": join})
        )
        await wait_for(lambda: len(statuses(receiver, "/conf")) == 1, 10, "A")
        await client.calling.dial(
            from_="+15551230000", to=b.uri, swml=swml({"join_conference": join})
        )
        await wait_for(lambda: len(statuses(receiver, "/conf")) == 2, 10, "B")
        coach = {**join, "coach": leg_a["id"]}
        await client.calling.dial(
            from_="+15551230000", to=c.uri, swml=swml({"join_conference": coach})
        )
        await wait_for(lambda: len(statuses(receiver, "/conf")) == 3, 10, "the coach")
        t0 = time.monotonic()
        await asyncio.gather(
            *(far.play(tone(hz, 1.6)) for far, hz in zip(fars, TONES, strict=True))
        )
        t1 = time.monotonic()
        heard_a, heard_b, heard_c = (far.audio(t0 + 0.4, t1) for far in fars)
        hears(heard_a, 1300, 2100, absent=(500,))  # A hears B and its coach
        hears(heard_b, 500, absent=(2100, 1300))  # B never hears the coach
        hears(heard_c, 500, 1300, absent=(2100,))  # the coach hears the call
        coaching = [e["params"]["coaching"] for e in receiver.events("/conf")]
        assert coaching == [False, False, True]
        assert receiver.events("/conf")[2]["params"]["call_id_to_coach"] == leg_a["id"]
        for far in fars:
            await far.calls[0].bye()
        # A room: the same mixer, no callbacks; join_room_result once the room is left.
    room = swml({"join_room": {"name": "room_1"}})
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        for far in (a, b):
            far.answered.clear()
            await client.calling.dial(from_="+15551230000", to=far.uri, swml=room)
            await asyncio.wait_for(far.answered.wait(), 10)

        def room_size() -> int:
            rooms = server.get("/api/calling/conferences").json()["data"]
            return sum(r["size"] for r in rooms if r["type"] == "room")

        await wait_for(lambda: room_size() == 2, 10, "two in the room")
        t0 = time.monotonic()
        await asyncio.gather(a.play(tone(500, 1.4)), b.play(tone(1300, 1.4)))
        t1 = time.monotonic()
        hears(a.audio(t0 + 0.4, t1), 1300, absent=(500,))
        hears(b.audio(t0 + 0.4, t1), 500, absent=(1300,))
        for far in (a, b):
            await far.calls[-1].bye()
        await wait_for(lambda: room_size() == 0, 10, "an empty room")


async def test_bad_parameters_end_the_script_with_an_error_and_a_full_conference_fails(
    server: Server, receiver: Receiver, fars: list[FarEnd]
) -> None:
    a, b, _ = fars
    full = {"name": "small", "max_participants": 2, "beep": False}
    unknown = "/api/calling/conferences/4f1c4ac6-33f5-4a53-9d5e-4a39c1b1a3c2"
    assert (await asyncio.to_thread(server.get, unknown)).status_code == 404
    assert (await asyncio.to_thread(server.get, "/api/calling/conferences/x")).status_code == 404
    async with httpx.AsyncClient(timeout=5) as http:
        anonymous = await http.get(f"{server.base_url}/api/calling/queues")
    assert anonymous.status_code == 401
    follow = {"play": {"url": receiver.serve_file("/f.wav", wav(tone(900, 4.0)), "audio/wav")}}
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        bad = await client.calling.dial(
            from_="+15551230000",
            to=a.uri,
            swml=swml({"join_conference": {"name": "x", "beep": "sometimes"}}),
        )
        await asyncio.to_thread(server.wait_status, bad["id"], "ended")
        events = await asyncio.to_thread(server.get, f"/api/calling/calls/{bad['id']}/events")
        errors = [e for e in events.json()["data"] if e["event_type"] == "calling.swml.error"]
        assert errors and "beep" in errors[0]["params"]["error"]
        # Two fit; a third is refused with join_conference_result failed and its script goes on.
        for far in (a, b):
            far.answered.clear()
            await client.calling.dial(
                from_="+15551230000",
                to=far.uri,
                swml=swml({"join_conference": {**full, "max_participants": 2}}),
            )
            await asyncio.wait_for(far.answered.wait(), 10)
        await asyncio.sleep(0.5)
        third = await client.calling.dial(
            from_="+15551230000",
            to=fars[2].uri,
            swml=swml(
                {"join_conference": full},
                {"switch": {"variable": "join_conference_result", "case": {"failed": [follow]}}},
            ),
        )
        await asyncio.wait_for(fars[2].answered.wait(), 10)
        await asyncio.sleep(1.0)
        t = time.monotonic()
        await asyncio.sleep(0.8)
        following = fars[2].audio(t, time.monotonic())
        assert [round(f / 10) * 10 for f in peaks(following, 1)] == [900]
        await client.calling.end(third["id"])


async def test_a_participants_stream_carries_what_it_hears_and_speaks_into_the_room(
    server: Server, receiver: Receiver, fars: list[FarEnd]
) -> None:
    """join_conference `stream`: A's stream carries the room minus A (B's tone, not A's own);
    with `realtime` the application's audio is A's speak side, so B hears it and A does not;
    A leaving ends the stream (`stop`, `finished`) while the conference goes on."""
    from test_stream_e2e import app_server

    from callplane.media.g711 import ulaw_decode, ulaw_encode

    a, b, _ = fars
    room = {"name": "streamed", "beep": False}
    async with (
        app_server() as (port, peers),
        AsyncRestClient(server.project, server.token, server.host) as client,
    ):
        stream = {
            "url": f"ws://{LOOPBACK}:{port}/room",
            "name": "room-audio",
            "status_url": receiver.url("/cs"),
            "custom_parameters": {"seat": "a"},
            "realtime": True,
        }
        leg_a = await client.calling.dial(
            from_="+15551230000",
            to=a.uri,
            swml=swml({"join_conference": {**room, "stream": stream}}),
        )
        await client.calling.dial(
            from_="+15551230000", to=b.uri, swml=swml({"join_conference": room})
        )

        def size() -> int:
            listed = server.get("/api/calling/conferences").json()["data"]
            return int(listed[0]["size"]) if listed else 0

        await wait_for(lambda: size() == 2 and peers and peers[0].events("start"), 10, "A, B in")
        peer = peers[0]
        start = peer.events("start")[0]["start"]
        assert start["callSid"] == leg_a["id"] and start["tracks"] == ["outbound"]
        assert start["customParameters"] == {"seat": "a"}

        t0 = time.monotonic()
        await asyncio.gather(a.play(tone(500, 1.0)), b.play(tone(1300, 1.0)))
        t1 = time.monotonic()
        payload = b"".join(
            base64.b64decode(m["media"]["payload"])
            for at, m in peer.messages
            if m["event"] == "media" and t0 + 0.3 <= at < t1
        )
        hears(ulaw_decode(payload).astype(np.float64), 1300, absent=(500,))

        assert peer.ws is not None
        said = base64.b64encode(ulaw_encode(tone(700, 0.8)).tobytes()).decode()
        sent_at = time.monotonic()
        await peer.ws.send(json.dumps({"event": "media", "media": {"payload": said}}))
        await asyncio.sleep(1.0)
        # The middle of the 0.8 s: clear of B's last frames and of the tone's ends.
        heard_b = b.audio(sent_at + 0.2, sent_at + 0.7)
        heard_a = a.audio(sent_at + 0.2, sent_at + 0.7)
        assert [round(f / 10) * 10 for f in peaks(heard_b, 1)] == [700]
        assert np.abs(heard_a).max() < 300, "the participant hears its own stream's audio"

        await client.calling.end(leg_a["id"])
        await wait_for(lambda: peer.events("stop"), 10, "the stop")
        await wait_for(lambda: size() == 1, 10, "B alone")
        await wait_for(
            lambda: (
                [e["params"]["state"] for e in receiver.events("/cs", "calling.call.stream")]
                == ["streaming", "finished"]
            ),
            10,
            "the stream's events",
        )
        assert peer.messages[-1][1]["event"] == "stop"
        await b.calls[-1].bye()
    params = receiver.events("/cs", "calling.call.stream")[0]["params"]
    assert params["name"] == "room-audio" and params["call_id"] == leg_a["id"]


# ---------------------------------------------------------------------------------------------
# Without sockets: bad `stream` objects, speaker detection driven by TickFrames, trim-silence.


@pytest.mark.parametrize(
    ("stream", "error"),
    [
        ("wss://a/b", "must be an object"),
        ({"name": "x"}, "needs a `url`"),
        ({"url": "ws://example.com/x"}, "ws:// is only allowed to loopback or private hosts"),
        ({"url": "https://a/b"}, "must start with wss://"),
        ({"url": "wss://a/b", "codec": "G722"}, "codec must be PCMU, PCMA or L16"),
        ({"url": "wss://a/b", "codec": "PCMU@16000h"}, "8000 Hz only"),
        ({"url": "wss://a/b", "realtime": "maybe"}, "`realtime` must be true or false"),
        ({"url": "wss://a/b", "status_url_method": "PUT"}, "status_url_method must be GET"),
    ],
)
async def test_a_bad_stream_object_is_an_error_before_joining(stream: object, error: str) -> None:
    from ticks import Emitted, TickSession, tick_call, tick_services

    from callplane.engine.operations.conference import directory_of, swml_join_conference
    from callplane.engine.swml.errors import SwmlError

    services = tick_services(Emitted(), extensions={})
    call = tick_call(TickSession())
    with pytest.raises(SwmlError, match="join_conference `stream`") as raised:
        await swml_join_conference(services, call, {"name": "c", "stream": stream})
    assert error in str(raised.value)
    assert not call.operations and directory_of(services).list("p") == []


def test_a_stream_defaults_to_what_the_participant_hears_and_realtime_speaks() -> None:
    from ticks import Emitted, tick_services

    from callplane.engine.operations.conference import _stream

    services = tick_services(Emitted())
    plain = _stream(services, {"url": "wss://a/b", "status_url": "http://127.0.0.1/s"})
    assert plain is not None and plain[1] == "http://127.0.0.1/s"
    assert (plain[0].tracks, plain[0].bidirectional) == (["outbound"], False)
    both = _stream(services, {"url": "wss://a/b", "track": "both_tracks", "realtime": "true"})
    assert both is not None and both[1] is None
    assert (both[0].tracks, both[0].bidirectional) == (["inbound", "outbound"], True)
    assert both[0].play_direction == "speak"
    assert _stream(services, None) is None


async def test_speaker_events_follow_what_a_participant_says() -> None:
    from ticks import Emitted, TickSession, tick_call, tick_services

    from callplane.engine.operations.conference import Conference, Directory, Participant, _Callback
    from callplane.media.engine import MediaEngine

    emitted = Emitted()
    services = tick_services(emitted, media=MediaEngine(), extensions={})
    conf = Conference(
        Directory(), services, project_id="p", name="talk", kind="conference", max_participants=10
    )
    session = TickSession()
    call = tick_call(session)
    conf.callback = _Callback(
        call,
        "http://127.0.0.1/cb",
        frozenset({"participant-speech-start", "participant-speech-stop"}),
    )
    p = Participant(
        conf,
        call,
        muted=False,
        coach=None,
        start_on_enter=True,
        end_on_exit=False,
        beep_on_enter=False,
        beep_on_exit=False,
    )
    conf.participants[call.id] = p
    session.add_listener(p.on_frame)
    session.silence(1.0)
    assert emitted.events == []
    voice = tone(300, 0.02, 0.1)  # -20 dBFS
    session.ticks([voice, voice])  # two loud ticks: not yet speech
    assert emitted.events == []
    session.tick(voice)
    session.ticks([voice] * 50)
    session.silence(0.4)  # a pause shorter than the hangover
    session.ticks([voice] * 10)
    assert [p["status"] for _, p in emitted.events] == ["participant-speech-start"]
    session.silence(0.6)
    events = [p for _, p in emitted.events]
    assert [e["status"] for e in events] == ["participant-speech-start", "participant-speech-stop"]
    assert events[0]["call_id"] == call.id and events[0]["conference_id"] == conf.id
    assert events[0]["name"] == "talk" and events[0]["size"] == 1
    quiet = tone(300, 0.02, 0.003)  # -50 dBFS: noise, not speech
    session.ticks([quiet] * 20)
    assert len(emitted.events) == 2
    conf.group.close()


def test_trim_silence_cuts_only_the_silent_ends(tmp_path: Path) -> None:
    from callplane.engine.operations.conference import trim_silence

    path = tmp_path / "room.wav"
    body = tone(440, 0.5)
    soundfile.write(
        path, np.concatenate([np.zeros(4000, np.int16), body, np.zeros(8000, np.int16)]), 8000
    )
    duration, size = trim_silence(path)
    audio, rate = soundfile.read(path, dtype="int16")
    assert rate == 8000 and size == path.stat().st_size
    loud = np.flatnonzero(np.abs(body) > 64)
    assert np.array_equal(audio, body[loud[0] : loud[-1] + 1])  # the tone, whole, nothing else
    assert abs(duration - audio.size / 8000) < 1e-9 and abs(duration - 0.5) < 0.01
