"""Helpers of the callplane.testing tests (a module name of its own: tests/e2e has a conftest)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from callplane.testing.server import CallplaneServer

IVR = {
    "version": "1.0.0",
    "sections": {
        "main": [
            {"answer": {}},
            {
                "prompt": {
                    "play": "say:Welcome. Press one for sales, two for support.",
                    "max_digits": 1,
                }
            },
            {
                "switch": {
                    "variable": "prompt_value",
                    "case": {"1": [{"play": {"url": "say:Connecting you to sales."}}]},
                    "default": [{"play": {"url": "say:Sorry, I did not get that."}}],
                }
            },
            {"hangup": {}},
        ]
    },
}

requires_flite = pytest.mark.skipif(shutil.which("flite") is None, reason="needs flite")


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    source = str(Path(__file__).parents[2] / "src")
    merged = {**os.environ, "PYTHONPATH": source, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "callplane.cli", *args],
        capture_output=True,
        text=True,
        env=merged,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallplaneServer]:
    """A server per test module (import it into the module: tests/ has no shared conftest
    for this directory, because `conftest` is a module name tests/e2e already uses)."""
    with CallplaneServer(tmp_path_factory.mktemp("server")) as running:
        yield running
