"""The engine's configuration, fixed when the server starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from callplane.netpolicy import TargetPolicy


@dataclass
class EngineConfig:
    project_id: str
    space_id: str
    sip_host: str
    sip_port: int
    media_host: str
    data_dir: Path
    routes: dict[str, str] = field(default_factory=dict)
    trunk: str | None = None
    ring_timeout: float = 60.0
    # Where users download recordings: the HTTP API's own address.
    http_base_url: str = "http://127.0.0.1:8080"
    # Which addresses taps and dialled sip: URIs may reach (the HTTP client applies it too).
    targets: TargetPolicy = field(default_factory=TargetPolicy)
    # Calls denoised at once: RNNoise costs ~1.1 ms of the media clock's 20 ms tick per call.
    max_denoised_calls: int = 8

    @property
    def recordings_dir(self) -> Path:
        return self.data_dir / "recordings"

    def recording_url(self, recording_id: str) -> str:
        return f"{self.http_base_url}/api/calling/recordings/{recording_id}"
