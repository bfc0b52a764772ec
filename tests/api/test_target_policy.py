"""Validation-time half of the outbound target policy (``--private-targets deny``).

Targets a caller names in a command are refused with the reference's 422 ``url_is_unsafe`` when
their host is a non-public address in any spelling a resolver accepts, or a localhost name. The
engine never sees such a command. (Names are resolved and checked when connecting:
tests/webhooks/test_target_policy.py.)
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest
from api_harness import CALL_ID, PROJECT, TOKEN, RecordingEngine, ServerThread, client_for

from callplane.api import create_app
from callplane.netpolicy import TargetPolicy, host_refusal, is_public, parse_address

URL = "/api/calling/calls"
DENY = TargetPolicy(allow_private=False)

ODD_LOOPBACKS = [
    "127.0.0.1",
    "2130706433",
    "0x7f000001",
    "0177.0.0.1",
    "127.1",
    "0x7f.1",
    "127.0.0.1.",
    "[::ffff:127.0.0.1]",
    "[::1]",
    "[0:0:0:0:0:0:0:1]",
    "localhost",
    "LocalHost.",
    "api.localhost",
]
PRIVATE = [
    "169.254.169.254",
    "2852039166",  # 169.254.169.254 in decimal
    "10.1",
    "192.168.1.20",
    "172.16.0.1",
    "100.64.0.1",
    "0.0.0.0",
    "0",
    "224.0.0.251",
    "240.0.0.1",
    "255.255.255.255",
    "[fe80::1]",
    "[fd00::1]",
    "[64:ff9b::a9fe:a9fe]",  # NAT64 of 169.254.169.254
    "[2002:7f00:1::]",  # 6to4 of 127.0.0.1
]


@pytest.mark.parametrize("host", ODD_LOOPBACKS + PRIVATE)
def test_non_public_hosts_are_refused_in_every_spelling(host: str) -> None:
    assert host_refusal(host) is not None


@pytest.mark.parametrize(
    "host", ["93.184.216.34", "1.1.1.1", "[2606:4700:4700::1111]", "example.com", "1.2.3.com"]
)
def test_public_hosts_and_names_pass(host: str) -> None:
    assert host_refusal(host) is None


@pytest.mark.parametrize(
    ("spelling", "address"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("10.1.2", "10.1.0.2"),
        ("0x0a.0.0.1", "10.0.0.1"),
        ("4294967295", "255.255.255.255"),
    ],
)
def test_ipv4_spellings_read_like_a_resolver(spelling: str, address: str) -> None:
    assert parse_address(spelling) == ipaddress.ip_address(address)


@pytest.mark.parametrize("name", ["4294967296", "1.2.3.256", "08.1.1.1", "1..2", "0x", "a.1"])
def test_non_addresses_are_names(name: str) -> None:
    assert parse_address(name) is None or name == "0x"


def test_ipv4_mapped_ipv6_of_a_public_address_is_still_refused() -> None:
    assert not is_public(ipaddress.ip_address("::ffff:93.184.216.34"))
    assert is_public(ipaddress.ip_address("93.184.216.34"))


@pytest.fixture(scope="module")
def engine() -> RecordingEngine:
    return RecordingEngine()


@pytest.fixture(scope="module")
def deny_url(engine: RecordingEngine) -> Iterator[str]:
    trusted = TargetPolicy.from_setting("deny", trusted=[("127.0.0.1", 3000)])
    app = create_app(engine, project_id=PROJECT, token=TOKEN, targets=trusted)
    with ServerThread(app) as running:
        yield running.base_url


@pytest.fixture(scope="module")
def allow_url(engine: RecordingEngine) -> Iterator[str]:
    app = create_app(engine, project_id=PROJECT, token=TOKEN)
    with ServerThread(app) as running:
        yield running.base_url


def _dial(**params: Any) -> dict[str, Any]:
    return {"command": "dial", "params": {"from": "+15550001111", "to": "+15550002222", **params}}


def _on_call(command: str, **params: Any) -> dict[str, Any]:
    return {"command": command, "id": CALL_ID, "params": params}


def _tap(device: dict[str, Any]) -> dict[str, Any]:
    return _on_call(
        "calling.tap", control_id="t", tap={"type": "audio", "direction": "both"}, device=device
    )


def _cases(host: str) -> list[tuple[dict[str, Any], str]]:
    """(command, refused attribute) for every target kind a command names."""
    web = f"http://{host}/x"
    return [
        (_dial(url=web), "url"),
        (_dial(url="https://swml.example.com/", status_url=web), "status_url"),
        (_dial(url="https://swml.example.com/", fallback_url=web), "fallback_url"),
        (_dial(url="https://swml.example.com/", to=f"sip:bob@{host}:5070"), "to"),
        ({"command": "update", "params": {"id": CALL_ID, "url": web}}, "url"),
        (_on_call("calling.play", play=[{"type": "audio", "url": web}]), "play.0.params.url"),
        (_on_call("calling.transfer", dest=web), "dest"),
        (_on_call("calling.record", record={"audio": {}}, status_url=web), "status_url"),
        (_tap({"type": "ws", "params": {"uri": f"ws://{host}/tap"}}), "device.params.uri"),
    ]


@pytest.mark.parametrize("host", ["127.0.0.1", "2130706433", "[::ffff:127.0.0.1]", "localhost"])
def test_every_target_kind_is_refused(deny_url: str, engine: RecordingEngine, host: str) -> None:
    engine.reset()
    with client_for(deny_url) as client:
        for body, attribute in _cases(host):
            response = client.post(URL, json=body)
            assert response.status_code == 422, (body, response.text)
            errors = response.json()["errors"]
            assert [(e["code"], e["attribute"]) for e in errors] == [("url_is_unsafe", attribute)]
            assert "private or local network" in errors[0]["message"]
    assert engine.executed == []


@pytest.mark.parametrize("addr", ["169.254.169.254", "127.0.0.1", "10.0.0.1"])
def test_tap_rtp_to_a_private_address_is_refused(deny_url: str, addr: str) -> None:
    with client_for(deny_url) as client:
        response = client.post(URL, json=_tap({"type": "rtp", "addr": addr, "port": 4000}))
    assert response.status_code == 422
    assert [e["attribute"] for e in response.json()["errors"]] == ["device.params.addr"]


def test_public_targets_and_names_pass_validation(deny_url: str, engine: RecordingEngine) -> None:
    engine.reset()
    with client_for(deny_url) as client:
        for host in ("93.184.216.34", "swml.example.com"):
            for body, _ in _cases(host):
                response = client.post(URL, json=body)
                assert response.status_code == 200, (body, response.text)
        # The operator's trusted origin (a --route SWML server) passes; its other ports do not.
        assert client.post(URL, json=_dial(url="http://127.0.0.1:3000/swml")).status_code == 200
        assert client.post(URL, json=_dial(url="http://127.0.0.1:3001/swml")).status_code == 422
    assert len(engine.executed) == 2 * len(_cases("x")) + 1


def test_allow_mode_accepts_private_targets(allow_url: str, engine: RecordingEngine) -> None:
    engine.reset()
    with client_for(allow_url) as client:
        for body, _ in _cases("127.0.0.1"):
            assert client.post(URL, json=body).status_code == 200, body
        tap = _tap({"type": "rtp", "addr": "127.0.0.1", "port": 4000})
        assert client.post(URL, json=tap).status_code == 200
