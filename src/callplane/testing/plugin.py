"""The pytest plugin (entry point ``pytest11``: ``callplane``): fixtures for testing voice
applications end to end against a real callplane server.

* ``callplane_server`` (session): a `CallplaneServer` on free loopback ports.
* ``phone``: a factory of virtual phones (`Phone`); ``phone()`` makes another one, and
  ``phone.call(...)``, ``phone.expect_said(...)``, ... act on the first one.
* ``webhooks``: a `WebhookReceiver` that verifies the server's signatures.

Everything heavy is imported when a fixture is first used, so the plugin costs nothing to
test suites that do not use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from callplane.testing.phone import Phone, PhoneRuntime
    from callplane.testing.server import CallplaneServer
    from callplane.testing.webhooks import WebhookReceiver


class PhoneFactory:
    """``phone()`` returns a new phone; other attributes are those of the default phone (made on
    first use, apart from the ones ``phone()`` returns)."""

    def __init__(
        self, runtime: PhoneRuntime, record_dir: Path, request: pytest.FixtureRequest
    ) -> None:
        self._runtime = runtime
        self._record_dir = record_dir
        self._request = request
        self.phones: list[Phone] = []
        self._default: Phone | None = None

    def __call__(self, name: str | None = None, **options: Any) -> Phone:
        from callplane.testing.phone import Phone

        if "server_sip" not in options:
            server: CallplaneServer = self._request.getfixturevalue("callplane_server")
            options["server_sip"] = server.sip
        made = Phone(self._runtime, name=name, record_dir=self._record_dir, **options)
        self.phones.append(made)
        return made

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("_"):
            raise AttributeError(attribute)
        if self._default is None:
            self._default = self()
        return getattr(self._default, attribute)

    def close(self) -> None:
        for made in self.phones:
            made.close()


@pytest.fixture(scope="session")
def callplane_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallplaneServer]:
    from callplane.testing.server import CallplaneServer

    server = CallplaneServer(tmp_path_factory.mktemp("callplane-server")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def callplane_phone_runtime() -> Iterator[PhoneRuntime]:
    from callplane.testing.phone import PhoneRuntime

    runtime = PhoneRuntime()
    try:
        yield runtime
    finally:
        runtime.close()


@pytest.fixture
def phone(
    callplane_phone_runtime: PhoneRuntime, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[PhoneFactory]:
    factory = PhoneFactory(callplane_phone_runtime, tmp_path, request)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def webhooks(callplane_server: CallplaneServer) -> Iterator[WebhookReceiver]:
    from callplane.testing.webhooks import WebhookReceiver

    receiver = WebhookReceiver(signing_key=callplane_server.signing_key).start()
    try:
        yield receiver
    finally:
        receiver.stop()
