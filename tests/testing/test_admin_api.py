"""The run-time route table and the call listing of the HTTP API (api/admin.py)."""

from __future__ import annotations

import httpx
import phonekit
import pytest
from phonekit import cli

from callplane.testing.server import CallplaneServer

pytestmark = pytest.mark.e2e
server = phonekit.server  # this module's server (a fixture)


def request(server: CallplaneServer, method: str, path: str, **kwargs: object) -> httpx.Response:
    auth = kwargs.pop("auth", (server.project, server.token))
    return httpx.request(method, server.url + path, auth=auth, timeout=10, **kwargs)  # type: ignore[arg-type]


def test_routes_are_added_listed_used_and_removed(server: CallplaneServer) -> None:
    swml_url = server.add_route(
        "echo", {"version": "1.0.0", "sections": {"main": [{"hangup": {}}]}}
    )
    listed = request(server, "GET", "/api/routes").json()["data"]
    assert {"name": "echo", "url": swml_url} in listed
    # dial(to=<route>) resolves through the same table.
    leg = server.client.calling.dial(from_="+15550002222", to="echo", swml={
        "version": "1.0.0", "sections": {"main": [{"hangup": {}}]}})  # fmt: skip
    assert leg["to"] == "echo"
    assert request(server, "DELETE", "/api/routes/echo").status_code == 204
    assert request(server, "DELETE", "/api/routes/echo").status_code == 404
    swml = {"version": "1.0.0", "sections": {"main": []}}
    params = {"from": "+15550002222", "to": "echo", "swml": swml}
    gone = request(server, "POST", "/api/calling/calls", json={"command": "dial", "params": params})
    assert gone.status_code == 422


@pytest.mark.parametrize(
    ("name", "body", "status"),
    [
        ("ok", {"url": "ftp://example.com/x"}, 422),
        ("ok", {"url": 5}, 422),
        ("ok", ["http://127.0.0.1/"], 422),
        ("bad name!", {"url": "http://127.0.0.1/"}, 422),
        ("x" * 65, {"url": "http://127.0.0.1/"}, 422),
    ],
)
def test_bad_routes_are_422(server: CallplaneServer, name: str, body: object, status: int) -> None:
    response = request(server, "PUT", f"/api/routes/{name}", json=body)
    assert response.status_code == status
    assert response.json()["errors"][0]["code"] == "invalid_parameter"


def test_unparseable_route_body_is_400(server: CallplaneServer) -> None:
    response = request(server, "PUT", "/api/routes/x", content=b"{nope")
    assert response.status_code == 400


def test_only_the_default_project_changes_routes(server: CallplaneServer) -> None:
    added = cli("projects", "add", "other", "--json", "--data", str(server.data_dir / "data"))
    other = __import__("json").loads(added.stdout)
    auth = (other["id"], other["token"])
    response = request(
        server, "PUT", "/api/routes/mine", json={"url": "http://127.0.0.1:1/"}, auth=auth
    )
    assert response.status_code == 403
    assert request(server, "GET", "/api/routes", auth=auth).status_code == 200
    # Each project lists only its own calls.
    assert request(server, "GET", "/api/calling/calls", auth=auth).json() == {"data": []}
    assert request(server, "GET", "/api/routes", auth=("x", "y")).status_code == 401


def test_call_listing_limits(server: CallplaneServer) -> None:
    for limit in ("0", "1001", "x"):
        response = request(server, "GET", "/api/calling/calls", params={"limit": limit})
        assert response.status_code == 422
    response = request(server, "GET", "/api/calling/calls", params={"status": "no-such"})
    assert response.json() == {"data": []}
