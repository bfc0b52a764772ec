"""Construction: credentials and env fallback, host/scheme resolution, headers, lifecycle."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

import callplane
from callplane import AsyncRestClient, RestClient


def test_public_names() -> None:
    assert issubclass(callplane.RestError, callplane.CallplaneError)
    assert issubclass(callplane.TransportError, callplane.RestError)
    assert callplane.RestClient is RestClient


def test_env_fallback(clean_env: pytest.MonkeyPatch, server: Any) -> None:
    clean_env.setenv("SIGNALWIRE_PROJECT_ID", "env-proj")
    clean_env.setenv("SIGNALWIRE_API_TOKEN", "env-tok")
    clean_env.setenv("SIGNALWIRE_SPACE", server.host)
    with RestClient() as client:
        assert client.base_url == f"http://{server.host}"
        client.calling.denoise("c1")
    expected = "Basic " + base64.b64encode(b"env-proj:env-tok").decode()
    assert server.last.headers["authorization"] == expected


def test_arguments_win_over_env_and_empty_strings_fall_back(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("SIGNALWIRE_PROJECT_ID", "env-proj")
    clean_env.setenv("SIGNALWIRE_API_TOKEN", "env-tok")
    clean_env.setenv("SIGNALWIRE_SPACE", "env.signalwire.com")
    client = RestClient("arg-proj", "", "")
    assert client.project == "arg-proj"
    assert client.base_url == "https://env.signalwire.com"
    client.close()


@pytest.mark.parametrize(
    ("args", "missing"),
    [
        ((None, None, None), ["project ID", "API token", "space host"]),
        (("p", None, "h.example.com"), ["API token"]),
        (("", "t", "h.example.com"), ["project ID"]),
        (("p", "t", ""), ["space host"]),
    ],
)
def test_missing_configuration_raises_value_error(
    clean_env: pytest.MonkeyPatch, args: tuple[str | None, ...], missing: list[str]
) -> None:
    with pytest.raises(ValueError, match="missing") as raised:
        RestClient(*args)
    message = str(raised.value)
    for what in missing:
        assert what in message
    assert ("SIGNALWIRE_API_TOKEN" in message) is ("API token" in missing)
    with pytest.raises(ValueError, match="missing"):
        AsyncRestClient(*args)


@pytest.mark.parametrize(
    ("host", "base_url"),
    [
        ("example.signalwire.com", "https://example.signalwire.com"),
        ("example.signalwire.com:8443", "https://example.signalwire.com:8443"),
        ("127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("127.0.0.1", "http://127.0.0.1"),
        ("127.0.0.2:8080", "http://127.0.0.2:8080"),
        ("localhost:8080", "http://localhost:8080"),
        ("LOCALHOST", "http://LOCALHOST"),
        ("[::1]:8080", "http://[::1]:8080"),
        ("[::1]", "http://[::1]"),
        ("::1", "http://[::1]"),
        ("10.0.0.5:8080", "https://10.0.0.5:8080"),
        ("[2001:db8::1]:443", "https://[2001:db8::1]:443"),
        (" example.signalwire.com ", "https://example.signalwire.com"),
        ("http://callplane.internal:8080", "http://callplane.internal:8080"),
        ("https://example.signalwire.com/", "https://example.signalwire.com"),
        ("HTTPS://proxy.example.com/prefix/", "HTTPS://proxy.example.com/prefix"),
    ],
)
def test_host_resolution(host: str, base_url: str) -> None:
    with RestClient("p", "t", host) as client:
        assert client.base_url == base_url


@pytest.mark.parametrize(
    "host", ["ftp://example.com", "example.com/path", "user@example.com", "http://", "a b"]
)
def test_bad_hosts_raise_value_error(host: str) -> None:
    with pytest.raises(ValueError, match="host"):
        RestClient("p", "t", host)


@pytest.mark.parametrize(
    "kwargs",
    [{"timeout": 0}, {"retries": -1}, {"retry_backoff": -1}, {"max_connections": 0}],
)
def test_bad_settings_raise_value_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RestClient("p", "t", "h.example.com", **kwargs)


def test_full_base_url_path_prefix_is_kept(server: Any) -> None:
    with RestClient("p", "t", f"http://{server.host}/gateway/") as client:
        client.calling.denoise("c1")
    assert server.last.path == "/gateway/api/calling/calls"


def test_user_agent_names_callplane_and_httpx(client: RestClient, server: Any) -> None:
    client.calling.denoise("c1")
    agent = server.last.headers["user-agent"]
    assert agent == f"callplane-python/{callplane.__version__} httpx/{httpx.__version__}"


def test_one_keep_alive_connection_is_reused(client: RestClient, server: Any) -> None:
    for _ in range(5):
        client.calling.denoise("c1")
    assert len({request.peer for request in server.requests}) == 1


def test_repr_hides_the_token() -> None:
    client = RestClient("proj-x", "tok-secret-y", "127.0.0.1:9")
    assert "tok-secret-y" not in repr(client)
    assert "proj-x" in repr(client)
    client.close()


def test_sync_context_manager_closes(server: Any) -> None:
    with RestClient("p", "t", server.host) as client:
        client.calling.denoise("c1")
    with pytest.raises(RuntimeError):
        client.calling.denoise("c1")


async def test_async_context_manager_closes(server: Any) -> None:
    async with AsyncRestClient("p", "t", server.host) as client:
        await client.calling.denoise("c1")
    with pytest.raises(RuntimeError):
        await client.calling.denoise("c1")
    other = AsyncRestClient("p", "t", server.host)
    assert await other.calling.denoise("c1") == server.call_leg
    await other.aclose()
