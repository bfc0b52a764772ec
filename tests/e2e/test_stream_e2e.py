"""Media streams (`calling.stream`, SWML `connect` to ``stream:…``) against the real server.

The application side is a WebSocket server of the test that speaks the published Media Streams
message shapes (docs/streams.md) itself: pipecat's TwilioFrameSerializer would pull ~500 MB of
dependencies into the test install. The far end is a SIP UA in the test process that sends known
audio as PCMU and records what it hears, with arrival times.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import pytest
import soundfile
from farend import FarEnd, peaks
from harness import LOOPBACK, Baresip, Receiver, Server, baresip_available, free_port, swml
from harness import until as wait_for
from ticks import Emitted, TickSession, tick_call, tick_services
from websockets.asyncio.server import ServerConnection, serve

from callplane import AsyncRestClient, RestError
from callplane.engine.calls import CallStatus
from callplane.engine.operations.connect import ConnectOperation, swml_connect
from callplane.engine.operations.stream import StreamParamError, settings_from, start_stream
from callplane.engine.swml.errors import SwmlError
from callplane.media.g711 import ulaw_decode, ulaw_encode

FROM = "+15559876543"
STREAM_EVENT = "calling.call.stream"
CONNECT_EVENT = "calling.call.connect"


def sine(freq: float, seconds: float, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * 8000)) / 8000
    return np.round(amplitude * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


@dataclass
class Peer:
    """One stream connection as the application saw it."""

    path: str
    headers: dict[str, str]
    messages: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    ws: ServerConnection | None = None

    def events(self, name: str) -> list[dict[str, Any]]:
        return [m for _, m in self.messages if m.get("event") == name]


@asynccontextmanager
async def app_server(
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[tuple[int, list[Peer]]]:
    peers: list[Peer] = []

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        peer = Peer(ws.request.path, dict(ws.request.headers.raw_items()), ws=ws)
        peers.append(peer)
        async for raw in ws:
            assert isinstance(raw, str), "every message of the protocol is JSON text"
            peer.messages.append((time.monotonic(), json.loads(raw)))

    async with serve(handler, LOOPBACK, 0, ssl=tls) as server:
        yield next(iter(server.sockets)).getsockname()[1], peers


def self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def get_events(receiver: Receiver, path: str, event_type: str) -> list[dict[str, Any]]:
    """Webhooks that came as GETs (`status_url_method: GET`), their query fields unflattened
    from the outbox's bracket form (``params[state]=streaming``)."""
    with receiver.lock:
        queries = [h.query for h in receiver.hits if h.path == path and h.method == "GET"]
    events = []
    for query in queries:
        event: dict[str, Any] = {}
        for name, value in parse_qsl(query, keep_blank_values=True):
            *outer, last = name.replace("]", "").split("[")
            node = event
            for key in outer:
                node = node.setdefault(key, {})
            node[last] = value
        if event.get("event_type") == event_type:
            events.append(event)
    return events


def stream_states(receiver: Receiver, path: str, control_id: str) -> list[str]:
    return [
        e["params"]["state"]
        for e in receiver.events(path, STREAM_EVENT)
        if e["params"]["control_id"] == control_id
    ]


@pytest.fixture
def tls_server(make_server: Any, tmp_path: Path) -> tuple[Server, ssl.SSLContext]:
    cert, key = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    # The server trusts the test's certificate through the system store's SSL_CERT_FILE.
    return make_server(env={"SSL_CERT_FILE": str(cert)}), context


async def test_one_way_stream_sends_the_callers_audio_dtmf_and_metadata(
    tls_server: tuple[Server, ssl.SSLContext], receiver: Receiver, far_end: FarEnd
) -> None:
    server, tls = tls_server
    rng = np.random.default_rng(7)
    # Known audio: noise, so that a misaligned or garbled payload cannot correlate by chance.
    known = np.round(rng.normal(0, 4000, 8000 * 4)).clip(-32768, 32767).astype(np.int16)
    status = receiver.url("/stream")
    async with (
        app_server(tls) as (port, peers),
        AsyncRestClient(server.project, server.token, server.host) as client,
    ):
        leg = await client.calling.dial(from_=FROM, to=far_end.uri, swml=swml({"sleep": -1}))
        call_id = str(leg["id"])
        await asyncio.wait_for(far_end.answered.wait(), 10)
        await client.calling.stream(
            call_id,
            control_id="s1",
            url=f"wss://{LOOPBACK}:{port}/app",
            name="agent",
            track="inbound_track",
            authorization_bearer_token="sekret",
            custom_parameters={"customer": "42"},
            status_url=status,
        )
        await client.calling.stream(
            call_id,
            control_id="dead",
            url=f"wss://{LOOPBACK}:{free_port()}/nobody",
            status_url=status,
            status_url_method="GET",
        )
        # A second stream of the same call, another track, runs beside the first.
        await client.calling.stream(
            call_id,
            control_id="s2",
            url=f"wss://{LOOPBACK}:{port}/second",
            track="outbound_track",
            codec="PCMA",
            status_url=status,
        )
        await wait_for(lambda: stream_states(receiver, "/stream", "s1") == ["streaming"])
        await wait_for(lambda: stream_states(receiver, "/stream", "s2") == ["streaming"])
        await far_end.play(known)
        await far_end.send_digits("7#")
        await asyncio.sleep(0.3)
        await client.calling.stream_stop(call_id, control_id="s1")
        await wait_for(
            lambda: stream_states(receiver, "/stream", "s1") == ["streaming", "finished"]
        )
        await wait_for(lambda: peers and peers[0].events("stop"), what="the stop message")
        await client.calling.end(call_id)

    dead = [e["params"] for e in get_events(receiver, "/stream", STREAM_EVENT)]
    assert [(p["control_id"], p["state"]) for p in dead] == [("dead", "finished")]
    assert "cannot connect" in dead[0]["reason"]
    finished = [
        e["params"]
        for e in receiver.events("/stream", STREAM_EVENT)
        if e["params"]["control_id"] == "s1"
    ][-1]
    assert finished["name"] == "agent" and finished["url"].startswith("wss://")

    assert sorted(p.path for p in peers) == ["/app", "/second"]
    second = next(p for p in peers if p.path == "/second")
    assert second.events("start")[0]["start"]["tracks"] == ["outbound"]
    assert second.events("start")[0]["start"]["mediaFormat"]["encoding"] == "audio/x-alaw"
    assert len(second.events("media")) > 100
    peer = next(p for p in peers if p.path == "/app")
    assert peer.headers["Authorization"] == "Bearer sekret"
    names = [m["event"] for _, m in peer.messages]
    assert names[:2] == ["connected", "start"] and names[-1] == "stop"
    start = peer.events("start")[0]
    sid = start["streamSid"]
    assert start["start"]["callSid"] == call_id
    assert start["start"]["tracks"] == ["inbound"]
    assert start["start"]["customParameters"] == {"customer": "42"}
    assert start["start"]["mediaFormat"] == {
        "encoding": "audio/x-mulaw",
        "sampleRate": 8000,
        "channels": 1,
    }
    assert all(m["streamSid"] == sid for _, m in peer.messages if m["event"] != "connected")
    seqs = [int(m["sequenceNumber"]) for _, m in peer.messages if "sequenceNumber" in m]
    assert seqs == list(range(1, len(seqs) + 1))  # `start` is 1

    media = [(at, m["media"]) for at, m in peer.messages if m["event"] == "media"]
    chunks = [int(m["chunk"]) for _, m in media]
    stamps = [int(m["timestamp"]) for _, m in media]
    assert chunks == list(range(1, len(chunks) + 1))
    assert stamps == [20 * (c - 1) for c in chunks]
    assert all(m["track"] == "inbound" for _, m in media)
    assert all(len(base64.b64decode(m["payload"])) == 160 for _, m in media)
    # 50 messages per second of wall-clock time, over the whole stream.
    span = media[-1][0] - media[0][0]
    assert abs((len(media) - 1) / span - 50) < 2.5, (len(media), span)
    # The payload is the far end's audio (PCMU both ways: compared after one round trip). On a
    # loaded machine the jitter buffer may conceal a packet the far end sent late, which shifts
    # what follows by 20 ms: so each half second is correlated on its own alignment, and every
    # 20 ms frame is looked up among the far end's frames (G.711 survives the trip bit-exact).
    heard = ulaw_decode(b"".join(base64.b64decode(m["payload"]) for _, m in media))
    sent = ulaw_decode(ulaw_encode(known).tobytes())
    heard_f, sent_f = heard.astype(np.float64), sent.astype(np.float64)
    lag = int(np.argmax(np.correlate(heard_f, sent_f[:4000], mode="valid")))
    block, slack = 4000, 800
    scores = []
    for start in range(0, sent.size - block + 1, block):
        ref = sent_f[start : start + block]
        lo = max(0, lag + start - slack)
        window = heard_f[lo : lag + start + block + slack]
        offset = int(np.argmax(np.correlate(window, ref, mode="valid")))
        scores.append(float(np.corrcoef(window[offset : offset + block], ref)[0, 1]))
        lag = offset + lo - start
    assert float(np.median(scores)) > 0.9, scores
    index = {sent[k : k + 160].tobytes(): k // 160 for k in range(0, sent.size, 160)}
    found = [index.get(heard[k : k + 160].tobytes()) for k in range(0, heard.size - 159, 160)]
    matched = [k for k in found if k is not None]
    assert matched == sorted(matched), "frames arrived out of order"
    assert len(set(matched)) >= 0.9 * len(index), (len(set(matched)), len(index))
    assert [d["dtmf"]["digit"] for d in peer.events("dtmf")] == ["7", "#"]


async def test_connect_to_a_stream_is_bidirectional_with_marks_and_clear(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    status = receiver.url("/stream")
    tone_1s = sine(440, 1.0)
    long_tone = sine(440, 6.0)
    async with app_server() as (port, peers):
        document = swml(
            {
                "connect": {
                    "to": f"stream:ws://{LOOPBACK}:{port}/bot",
                    "status_url": status,
                    "status_url_method": "GET",
                    "custom_parameters": {"lang": "en"},
                }
            },
            {"play": {"url": "silence:0.5"}},
        )
        async with AsyncRestClient(server.project, server.token, server.host) as client:
            leg = await client.calling.dial(from_=FROM, to=far_end.uri, swml=document)
            call_id = str(leg["id"])
            await asyncio.wait_for(far_end.answered.wait(), 10)
            await wait_for(lambda: peers and peers[0].events("start"), what="the start")
            peer = peers[0]
            assert peer.ws is not None
            sid = peer.events("start")[0]["streamSid"]
            assert peer.events("start")[0]["start"]["customParameters"] == {"lang": "en"}

            async def send_audio(samples: np.ndarray, chunk: int) -> None:
                assert peer.ws is not None
                for k in range(0, samples.size, chunk):
                    payload = base64.b64encode(ulaw_encode(samples[k : k + chunk]).tobytes())
                    await peer.ws.send(
                        json.dumps(
                            {
                                "event": "media",
                                "streamSid": sid,
                                "media": {"payload": payload.decode()},
                            }
                        )
                    )

            # Messages that are not the protocol's are ignored; the stream goes on.
            for junk in (
                "not json",
                "[1]",
                '{"event": "media", "media": {"payload": 5}}',
                '{"event": "media", "media": {"payload": "%%%"}}',
                '{"event": "x"}',
                '{"event": "mark", "mark": "no-name"}',
            ):
                await peer.ws.send(junk)
            await peer.ws.send(b"\x00binary")
            # 1 s of tone in odd-sized chunks (faster than real time), then a mark.
            sent_at = time.monotonic()
            await send_audio(tone_1s, 1000)
            await peer.ws.send(
                json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": "tone"}})
            )
            await wait_for(lambda: peer.events("mark"), what="the mark to come back")
            mark_at = next(at for at, m in peer.messages if m["event"] == "mark")
            assert peer.events("mark")[0]["mark"]["name"] == "tone"
            assert mark_at - sent_at > 0.9, "the mark came back before the tone had played"
            await asyncio.sleep(0.3)
            heard = far_end.audio(sent_at, mark_at)
            assert heard.size > 6000
            assert abs(peaks(heard, 1)[0] - 440) < 10

            # A long tone, cleared in the middle: the far end's tone stops within 60 ms.
            await send_audio(long_tone, 320)
            await peer.ws.send(
                json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": "long"}})
            )
            await asyncio.sleep(1.5)
            cleared_at = time.monotonic()
            await peer.ws.send(json.dumps({"event": "clear", "streamSid": sid}))
            await wait_for(lambda: len(peer.events("mark")) == 2, what="the pending mark")
            assert peer.events("mark")[1]["mark"]["name"] == "long"
            long_at = [at for at, m in peer.messages if m.get("mark", {}).get("name") == "long"]
            assert long_at[0] - cleared_at < 0.5
            await asyncio.sleep(0.5)
            loud = [
                p.at
                for p in far_end.packets
                if p.pt == 0
                and p.at > cleared_at - 0.5
                and np.abs(ulaw_decode(p.payload).astype(np.float64)).max() > 3000
            ]
            assert loud, "the tone was not playing before the clear"
            assert max(loud) - cleared_at < 0.06, max(loud) - cleared_at

            # The application closes the socket: the bridge ends, the script goes on.
            await peer.ws.close()
            await wait_for(
                lambda: (
                    [e["params"]["state"] for e in get_events(receiver, "/stream", STREAM_EVENT)]
                    == ["streaming", "finished"]
                ),
                what="the stream to finish",
            )
            assert server.call_status(call_id) in ("answered", "ending", "ended")
            await wait_for(lambda: server.call_status(call_id) == "ended", what="script end")
    # The connect's events and the stream's, as GETs carrying the events' fields.
    await wait_for(lambda: len(get_events(receiver, "/stream", CONNECT_EVENT)) == 3)
    assert receiver.events("/stream") == []  # no POST
    connect = [e["params"] for e in get_events(receiver, "/stream", CONNECT_EVENT)]
    assert [p["connect_state"] for p in connect] == ["connecting", "connected", "disconnected"]
    assert all(p["call_id"] == call_id for p in connect)
    stream = get_events(receiver, "/stream", STREAM_EVENT)[0]["params"]
    assert connect[1]["peer"]["device"]["type"] == "stream"
    assert connect[1]["peer"]["device"]["params"]["control_id"] == stream["control_id"]
    assert connect[1]["peer"]["device"]["params"]["stream_sid"] == sid
    assert stream["url"] == f"ws://{LOOPBACK}:{port}/bot"


async def test_both_tracks_in_l16_and_the_url_rules(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    """both_tracks: an inbound and an outbound message per tick, with the same chunk; L16 is
    16 kHz little-endian PCM. REST accepts wss:// only; SWML's ws:// reaches loopback (private
    targets allowed); a connect to a socket that refuses fails with a reason."""
    status = receiver.url("/stream")
    async with app_server() as (port, peers):
        dead = f"ws://{LOOPBACK}:{free_port()}/nobody"
        document = swml(
            {
                "stream": {
                    "url": f"ws://{LOOPBACK}:{port}/both",
                    "track": "both_tracks",
                    "codec": "L16",
                    "status_url": status,
                    "status_url_method": "get",
                }
            },
            {"connect": {"to": f"stream:{dead}", "status_url": status}},
            {"set": {"reason": "${connect_failed_reason}"}},
            {"request": {"url": receiver.url("/vars"), "method": "POST",
                         "body": {"result": "${connect_result}", "reason": "${reason}",
                                  "stream": "${stream_result}"}}},
            {"sleep": -1},
        )  # fmt: skip
        async with AsyncRestClient(server.project, server.token, server.host) as client:
            leg = await client.calling.dial(from_=FROM, to=far_end.uri, swml=document)
            call_id = str(leg["id"])
            await asyncio.wait_for(far_end.answered.wait(), 10)
            await wait_for(lambda: receiver.events("/vars"), what="the script's variables")
            # What callplane plays (outbound) is a 1 kHz tone; the far end says 440 Hz.
            buf = io.BytesIO()
            soundfile.write(buf, sine(1000, 3.0), 8000, format="WAV", subtype="PCM_16")
            tone_url = receiver.serve_file("/tone.wav", buf.getvalue(), "audio/wav")
            await client.calling.play(
                call_id, control_id="p", play=[{"type": "audio", "params": {"url": tone_url}}]
            )
            await far_end.play(sine(440, 2.0))
            with pytest.raises(RestError) as refused:
                await client.calling.stream(
                    call_id, control_id="x", url=f"ws://{LOOPBACK}:{port}/x"
                )
            assert refused.value.status_code == 422
            with pytest.raises(RestError) as opus:
                await client.calling.stream(
                    call_id, control_id="o", url=f"wss://{LOOPBACK}:{port}/o", codec="OPUS"
                )
            assert opus.value.status_code == 501
            await client.calling.end(call_id)
            await wait_for(lambda: server.call_status(call_id) == "ended")
    variables = receiver.events("/vars")[0]
    assert variables == {"result": "failed", "reason": "error", "stream": "success"}
    # The refused connect: its events as POSTs (the default); the SWML stream's as GETs.
    connect = [e["params"] for e in receiver.events("/stream", CONNECT_EVENT)]
    assert [(p["connect_state"], p.get("failed_reason")) for p in connect] == [
        ("connecting", None),
        ("failed", "error"),
    ]
    [refused] = [e["params"] for e in receiver.events("/stream", STREAM_EVENT)]
    assert refused["url"] == dead and "cannot connect" in refused["reason"]
    await wait_for(lambda: len(get_events(receiver, "/stream", STREAM_EVENT)) == 2)
    streamed = [e["params"] for e in get_events(receiver, "/stream", STREAM_EVENT)]
    assert [p["state"] for p in streamed] == ["streaming", "finished"]
    assert streamed[0]["url"] == f"ws://{LOOPBACK}:{port}/both"
    assert streamed[0]["call_id"] == call_id
    (peer,) = peers
    start = peer.events("start")[0]["start"]
    assert start["tracks"] == ["inbound", "outbound"]
    assert start["mediaFormat"] == {"encoding": "audio/x-l16", "sampleRate": 16000, "channels": 1}
    media = [m["media"] for m in peer.events("media")]
    inbound = [m for m in media if m["track"] == "inbound"]
    outbound = [m for m in media if m["track"] == "outbound"]
    assert [m["chunk"] for m in inbound] == [m["chunk"] for m in outbound]
    assert all(len(base64.b64decode(m["payload"])) == 640 for m in media)

    def audio(messages: list[dict[str, Any]]) -> np.ndarray:
        raw = b"".join(base64.b64decode(m["payload"]) for m in messages)
        return np.frombuffer(raw, dtype="<i2").astype(np.float64)

    def peak(x: np.ndarray) -> float:
        spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
        return float(np.fft.rfftfreq(x.size, 1 / 16000)[int(np.argmax(spectrum))])

    loud_in = audio(inbound)
    loud_out = audio(outbound)
    assert abs(peak(loud_in[np.abs(loud_in) > 0][:16000]) - 440) < 10
    assert abs(peak(loud_out[np.abs(loud_out) > 0][:16000]) - 1000) < 10


@pytest.mark.skipif(not baresip_available(), reason="baresip is not installed")
async def test_baresip_key_presses_arrive_as_dtmf_messages(server: Server, tmp_path: Path) -> None:
    source = tmp_path / "silence.wav"
    soundfile.write(source, np.zeros(8000 * 60, dtype=np.int16), 8000, subtype="PCM_16")
    baresip = Baresip(tmp_path / "baresip").start(source)
    try:
        async with app_server() as (port, peers):
            document = swml(
                {"stream": {"url": f"ws://{LOOPBACK}:{port}/keys"}},
                {"sleep": -1},
            )
            async with AsyncRestClient(server.project, server.token, server.host) as client:
                leg = await client.calling.dial(from_=FROM, to=baresip.uri, swml=document)
                await wait_for(lambda: peers and peers[0].events("media"), what="the stream")
                await asyncio.to_thread(baresip.command, "sndcode", "42*#")
                await wait_for(lambda: len(peers[0].events("dtmf")) >= 4, what="the digits")
                await asyncio.sleep(0.5)  # no duplicate (RFC 4733 and in-band are merged)
                await client.calling.end(str(leg["id"]))
                # The call's end stops the stream: `stop`, then a normal close.
                await wait_for(lambda: peers[0].events("stop"), what="the stop message")
    finally:
        baresip.stop()
    digits = [m["dtmf"]["digit"] for m in peers[0].events("dtmf")]
    assert digits == ["4", "2", "*", "#"]
    assert all(m["dtmf"]["track"] == "inbound_track" for m in peers[0].events("dtmf"))


@pytest.mark.parametrize(
    ("url", "setting", "refused"),
    [
        ("wss://example.com/x", "deny", False),
        ("wss://127.0.0.1/x", "allow", False),
        ("ws://127.0.0.1:9/x", "allow", False),
        ("ws://10.1.2.3/x", "allow", False),
        ("ws://[::1]/x", "allow", False),
        ("ws://127.0.0.1:9/x", "deny", True),
        ("ws://example.com/x", "allow", True),
        ("http://127.0.0.1/x", "allow", True),
        ("wss:///nohost", "allow", True),
    ],
)
def test_url_rules(url: str, setting: str, refused: bool) -> None:
    from callplane.engine.operations.stream import url_refusal
    from callplane.netpolicy import TargetPolicy

    assert (url_refusal(url, TargetPolicy.from_setting(setting)) is not None) is refused


def test_stream_parameters_and_their_defaults() -> None:
    s = settings_from({"url": "wss://a/b"})
    assert (s.track, s.codec, s.tracks, s.bidirectional) == (
        "inbound_track",
        "PCMU",
        ["inbound"],
        False,
    )
    s = settings_from(
        {"url": "wss://a/b", "track": "both_tracks", "codec": "l16", "custom_parameters": {"n": 1}},
        bidirectional=True,
    )
    assert (s.codec, s.tracks, s.custom_parameters) == ("L16", ["inbound", "outbound"], {"n": "1"})
    assert (s.rate, s.ptime, s.status_url_method) == (16000, 20, "POST")
    s = settings_from({"url": "wss://a/b", "codec": "PCMA@60i", "status_url_method": "get"})
    assert (s.codec, s.rate, s.ptime, s.status_url_method) == ("PCMA", 8000, 60, "GET")
    for bad in (
        {"track": "sideways"},
        {"codec": "OPUS"},
        {"codec": "PCMU@16000h"},
        {"codec": "L16@44100h"},
        {"codec": "PCMU@30i"},
        {"custom_parameters": [1]},
        {"status_url_method": "PUT"},
    ):
        with pytest.raises(StreamParamError) as error:
            settings_from({"url": "wss://a/b", **bad})
        assert error.value.param == next(iter(bad))
        assert error.value.not_built == (bad == {"codec": "OPUS"})


# ---------------------------------------------------------------------------------------------
# connect to stream:… as a connect (its calling.call.connect events), driven without SIP: a call
# on a TickSession, a real WebSocket application on loopback.


async def _never(*_: Any) -> None:
    raise AssertionError("the call is answered already")


@pytest.mark.parametrize("answer_on_bridge", [False, True])
async def test_connect_to_a_stream_reports_connect_events_until_the_caller_hangs_up(
    answer_on_bridge: bool,
) -> None:
    emitted = Emitted()
    session = TickSession()
    call = tick_call(session)
    answers: list[str] = []

    async def early_answer(_: Any) -> None:
        answers.append("183")

    async def answer(_: Any) -> None:
        # answer_on_bridge: the caller is answered once the application is there.
        answers.append(f"200 after {[p['state'] for p in emitted.params('stream')]}")
        call.status = CallStatus.ANSWERED

    if answer_on_bridge:
        call.status = CallStatus.RINGING
    services = tick_services(emitted, answer=answer, early_answer=early_answer)
    async with app_server() as (port, peers):
        params = {
            "to": f"stream:ws://{LOOPBACK}:{port}/bot",
            "name": "bot",
            "status_url": "http://127.0.0.1:9/status",
            "status_url_method": "get",
            "answer_on_bridge": answer_on_bridge,
        }
        task = asyncio.create_task(swml_connect(services, call, params))
        await wait_for(lambda: peers and peers[0].events("start"), 5, "the start")
        session.silence(0.1)
        [op] = [o for o in call.operations.values() if isinstance(o, ConnectOperation)]
        assert op.status_url_method == "GET"
        assert op.stream is not None and op.stream.status_url_method == "GET"
        await op.stop()  # the caller hangs up
        result = await asyncio.wait_for(task, 5)
        await wait_for(lambda: peers[0].events("stop"), 5, "the stop")
    assert result == {"connect_result": "connected", "return_value": "connected"}
    connect = emitted.params("connect")
    assert [p["connect_state"] for p in connect] == ["connecting", "connected", "disconnected"]
    assert "peer" not in connect[0]
    stream = emitted.params("stream")
    assert [p["state"] for p in stream] == ["streaming", "finished"]
    device = connect[1]["peer"]["device"]
    assert device["type"] == "stream"
    assert device["params"] == {
        "url": f"ws://{LOOPBACK}:{port}/bot",
        "name": "bot",
        "control_id": stream[0]["control_id"],
        "stream_sid": peers[0].events("start")[0]["streamSid"],
    }
    assert connect[2]["peer"] == connect[1]["peer"]
    assert len(peers[0].events("media")) >= 5
    assert not call.operations
    assert answers == (["183", "200 after ['streaming']"] if answer_on_bridge else [])


async def test_connect_to_a_refused_stream_fails_like_an_unreachable_callee() -> None:
    emitted = Emitted()
    call = tick_call(TickSession())
    services = tick_services(emitted, answer=_never, early_answer=_never)
    params = {"to": f"stream:ws://{LOOPBACK}:{free_port()}/nobody", "status_url": "http://x/s"}
    result = await asyncio.wait_for(swml_connect(services, call, params), 10)
    assert result == {
        "connect_result": "failed",
        "return_value": "failed",
        "connect_failed_reason": "error",
    }
    connect = emitted.params("connect")
    assert [p["connect_state"] for p in connect] == ["connecting", "failed"]
    assert connect[1]["failed_reason"] == "error"
    [finished] = emitted.params("stream")
    assert finished["state"] == "finished" and "cannot connect" in finished["reason"]
    with pytest.raises(SwmlError, match="status_url_method"):
        await swml_connect(services, call, {**params, "status_url_method": "PUT"})


def tone_peak(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[int(np.argmax(spectrum))])


async def test_codec_modifiers_set_the_l16_rate_and_the_ptime_both_ways() -> None:
    """`L16@24000h@40i`: 40 ms of 24 kHz PCM per message and track; the application's 24 kHz
    audio, in chunks that split samples, plays to the caller at 8 kHz."""
    emitted = Emitted()
    session = TickSession()
    call = tick_call(session)
    services = tick_services(emitted)
    async with app_server() as (port, peers):
        settings = settings_from(
            {
                "url": f"ws://{LOOPBACK}:{port}/wide",
                "codec": "l16@24000h@40i",
                "track": "both_tracks",
            },
            bidirectional=True,
        )
        op = start_stream(services, call, control_id="w", settings=settings, status_url=None)
        assert await asyncio.wait_for(op.ready, 5)
        caller = sine(440, 0.4)
        for k in range(0, caller.size, 160):
            session.tick(caller[k : k + 160])
        session.tick()  # the 21st frame waits for its pair
        await wait_for(lambda: len(peers[0].events("media")) == 20, 5, "10 messages a track")
        assert peers[0].ws is not None
        wide = np.round(0.3 * 32767 * np.sin(2 * np.pi * 1000 * np.arange(12000) / 24000))
        raw = wide.astype("<i2").tobytes()
        for k in range(0, len(raw), 1001):  # odd sizes: samples split across messages
            payload = base64.b64encode(raw[k : k + 1001]).decode()
            await peers[0].ws.send(json.dumps({"event": "media", "media": {"payload": payload}}))
        assert op.live is not None
        await wait_for(lambda: op.live.queued_frames >= 24, 5, "the application's audio")
        heard = np.concatenate([session.tick().outbound for _ in range(24)])
        await op.stop()
    start = peers[0].events("start")[0]["start"]
    assert start["mediaFormat"] == {"encoding": "audio/x-l16", "sampleRate": 24000, "channels": 1}
    media = [m["media"] for m in peers[0].events("media")]
    inbound = [m for m in media if m["track"] == "inbound"][:10]  # the caller's 0.4 s
    assert [m["chunk"] for m in inbound] == [str(c) for c in range(1, 11)]
    assert [m["timestamp"] for m in inbound] == [str(40 * c) for c in range(10)]
    assert all(len(base64.b64decode(m["payload"])) == 1920 for m in media)  # 40 ms at 24 kHz
    sent = np.frombuffer(b"".join(base64.b64decode(m["payload"]) for m in inbound), "<i2")
    assert abs(tone_peak(sent[2400:], 24000) - 440) < 15
    assert np.abs(heard).max() > 5000 and abs(tone_peak(heard[800:], 8000) - 1000) < 15
