"""Property-based fuzzing of the real server, engine included: no input gets a 500 or a crash.

Values are drawn from loopback-only pools: a fuzzed URL or SIP destination can only ever point at
127.0.0.1, so a fuzz run never sends traffic anywhere else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import requires_sipp
from harness import Server, Sipp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callplane import RestClient

pytestmark = [requires_sipp]

COMMANDS = [
    "dial",
    "update",
    "calling.end",
    "calling.transfer",
    "calling.disconnect",
    "calling.play",
    "calling.play.pause",
    "calling.play.resume",
    "calling.play.stop",
    "calling.play.volume",
    "calling.record",
    "calling.collect",
    "calling.detect",
    "calling.tap",
    "calling.stream",
    "calling.user_event",
    "calling.ai_hold",
    "calling.live_transcribe",
    "calling.refer",
    "calling.nonsense",
]

KEYS = [
    "from",
    "to",
    "url",
    "swml",
    "status",
    "status_url",
    "status_events",
    "timeout",
    "codecs",
    "control_id",
    "play",
    "volume",
    "loop",
    "reason",
    "dest",
    "event",
    "record",
    "audio",
    "digits",
    "speech",
    "detect",
    "tap",
    "device",
    "action",
    "id",
    "custom_variables",
    "send_digits",
    "url_method",
    "fallback_url",
]

LOOPBACK_STRINGS = [
    "",
    "p1",
    "ctrl-1",
    "+15551234567",
    "+1",
    "sip:fuzz@127.0.0.1:1",
    "sip:",
    "sips:bad@@",
    "http://127.0.0.1:1/swml",
    "https://127.0.0.1:1/x.wav",
    "wss://127.0.0.1:1/stream",
    "ring:us",
    "say:hello",
    "silence:0.2",
    "completed",
    "canceled",
    "hangup",
    "PCMU,PCMA",
    "OPUS",
    "123#",
    "start",
    "stop",
    "audio",
    "tts",
    "silence",
    "ringtone",
    "machine",
    "fax",
    "rtp",
    "ws",
    "GET",
    "00000000-0000-4000-8000-000000000000",
    "\x00\ud7ff",
    "é" * 300,
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(LOOPBACK_STRINGS),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.sampled_from([*KEYS, "type", "params", "text", "name"]), children, max_size=4
        ),
    ),
    max_leaves=12,
)
params = st.dictionaries(st.sampled_from(KEYS), values, max_size=6)

# Valid commands on the live call, as the base that mutations start from: random params alone
# almost never get past validation, and the engine is what this test is after.
SILENT_SWML = {"version": "1.0.0", "sections": {"main": [{"sleep": -1}]}}
TEMPLATES: list[tuple[str, dict[str, Any]]] = [
    (
        "calling.play",
        {"control_id": "p1", "play": [{"type": "silence", "params": {"duration": 5}}]},
    ),
    ("calling.play", {"control_id": "p2", "play": [{"type": "ringtone", "name": "us"}], "loop": 0}),
    ("calling.play", {"play": [{"type": "audio", "url": "http://127.0.0.1:1/x.wav"}]}),
    ("calling.play", {"control_id": "p3", "play": [{"type": "tts", "text": "hi"}], "volume": 3}),
    ("calling.play.volume", {"control_id": "p1", "volume": -3.5}),
    ("calling.play.pause", {"control_id": "p1"}),
    ("calling.play.resume", {"control_id": "p1"}),
    ("calling.play.stop", {"control_id": "p2"}),
    ("calling.user_event", {"event": {"type": "x", "n": 1}}),
    ("calling.transfer", {"dest": SILENT_SWML}),
    ("calling.transfer", {"dest": "http://127.0.0.1:1/swml"}),
    ("calling.transfer", {"dest": "sip:elsewhere@127.0.0.1:1"}),
    ("update", {"swml": SILENT_SWML}),
    ("update", {"url": "http://127.0.0.1:1/swml", "status_url": "http://127.0.0.1:1/s"}),
    ("calling.disconnect", {}),
    ("calling.record", {"control_id": "r1", "record": {"audio": {"format": "wav"}}}),
    (
        "dial",
        {
            "from": "+15550000000",
            "to": "sip:fuzz@127.0.0.1:1",
            "swml": SILENT_SWML,
            "timeout": 1,
            "codecs": "PCMA",
            "send_digits": "1w2",
        },
    ),
]


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    command, base = draw(st.sampled_from(TEMPLATES))
    body = dict(base)
    for key in draw(st.lists(st.sampled_from([*base, *KEYS]), max_size=2, unique=True)):
        if draw(st.booleans()):
            body.pop(key, None)
        else:
            body[key] = draw(values)
    return command, body


class LiveCall:
    """A call answered by sipp; when a fuzzed command ends it, the next example gets a new one."""

    def __init__(self, server: Server, sipp: Sipp) -> None:
        self.server = server
        self.sipp = sipp
        self.client = RestClient(server.project, server.token, server.host)
        self.id = ""
        self.dials = 0

    def ensure(self) -> str:
        if not self.id or self.server.call_status(self.id) != "answered":
            leg = self.client.calling.dial(
                from_="+15559876543", to=f"sip:bob@{self.sipp.uri_host}", swml=SILENT_SWML
            )
            self.server.wait_status(leg["id"], "answered")
            self.id = leg["id"]
            self.dials += 1
        return self.id


@pytest.fixture
def live_call(server: Server, tmp_path: Path) -> Any:
    sipp = Sipp(["-sn", "uas"]).start(tmp_path)  # answers any number of calls
    yield LiveCall(server, sipp)
    sipp.stop()


def test_fuzzed_commands_never_get_a_500(server: Server, live_call: LiveCall) -> None:
    seen: dict[int, int] = {}
    codes: dict[str, int] = {}
    http = httpx.Client(base_url=server.base_url, auth=(server.project, server.token), timeout=10)

    @settings(
        max_examples=400,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        database=None,
    )
    @given(
        request=st.one_of(st.tuples(st.sampled_from(COMMANDS), params), mutated()),
        call_id=st.sampled_from(
            ["live", "live", "live", "00000000-0000-4000-8000-000000000000", "x", None]
        ),
    )
    def one(request: tuple[str, dict[str, Any]], call_id: str | None) -> None:
        command, body_params = request
        if call_id == "live":
            call_id = live_call.ensure()
        if command == "update" and call_id is not None:
            body_params = {**body_params, "id": call_id}
        body: dict[str, Any] = {"command": command, "params": body_params}
        if call_id is not None and command not in ("dial", "update"):
            body["id"] = call_id
        response = http.post("/api/calling/calls", json=body)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        if response.status_code == 422:
            code = response.json()["errors"][0]["code"]
            codes[code] = codes.get(code, 0) + 1
        assert response.status_code < 500 or response.status_code == 501, response.text
        assert response.headers["content-type"].startswith("application/json")

    one()
    assert http.get("/health").status_code == 200
    assert "Traceback" not in server.log(), server.log()[-4000:]
    assert sum(seen.values()) >= 100
    print(
        "calls dialled:",
        live_call.dials,
        "status codes seen:",
        dict(sorted(seen.items())),
        "422 codes:",
        codes,
    )
    http.close()
