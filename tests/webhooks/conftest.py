"""Fixtures for the webhook tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from webhook_receiver import Receiver


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()
