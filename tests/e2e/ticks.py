"""Driving operations with the media graph's per-tick frames alone (no sockets, no clock).

`TickSession` stands in for an `RtpSession` towards the operations: they add their
`TickFrames` listeners to it, and the test hands every listener one tick at a time, exactly as
the media engine does every 20 ms. `tick_call` is a real `Call` answered on such a session.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np

from callplane.engine.calls import Call, CallStatus
from callplane.engine.operations.base import Operation
from callplane.engine.services import Services
from callplane.media.engine import FrameListener, TickFrames
from callplane.media.jitter import JitterBuffer
from callplane.media.sources import FRAME_SAMPLES, LiveSource
from callplane.netpolicy import TargetPolicy

SILENT = np.zeros(FRAME_SAMPLES, dtype=np.int16)


class TickSession:
    def __init__(self, payload_type: int = 0) -> None:
        self.listeners: list[FrameListener] = []
        self.closed = False
        self.payload_type = payload_type
        self.on_dtmf: Any = None
        self.tick_number = 1000  # the media clock is shared: a call does not start at tick 0
        self.jitter = JitterBuffer(target_frames=0)
        self.playbacks: list[TickPlayback] = []

    def play(self, source: LiveSource, volume_db: float = 0.0, **_: Any) -> TickPlayback:
        """A live playback: its frames, at `volume_db`, become the tick's outbound audio."""
        playback = TickPlayback(source, volume_db)
        self.playbacks.append(playback)
        return playback

    def add_listener(self, cb: FrameListener) -> None:
        self.listeners.append(cb)

    def remove_listener(self, cb: FrameListener) -> None:
        if cb in self.listeners:
            self.listeners.remove(cb)

    def tick(
        self,
        inbound: np.ndarray | None = None,
        outbound: np.ndarray | None = None,
        speak: np.ndarray | None = None,
    ) -> TickFrames:
        """One 20 ms tick to every listener; `inbound` None = nothing arrived (silence).
        Without `outbound`, a live playback's next frame is what the leg sends."""
        if outbound is None:
            for playback in self.playbacks:
                if not playback.stopped:
                    outbound = playback.next_frame()
                    break
        frames = TickFrames(
            tick=self.tick_number,
            inbound=SILENT.copy() if inbound is None else inbound.astype(np.int16),
            outbound=SILENT.copy() if outbound is None else outbound.astype(np.int16),
            speak=speak,
            heard=inbound is not None,
        )
        self.tick_number += 1
        for cb in tuple(self.listeners):
            cb(frames)
        return frames

    def ticks(self, inbound: Iterable[np.ndarray]) -> None:
        for frame in inbound:
            self.tick(frame)

    def silence(self, seconds: float) -> None:
        for _ in range(round(seconds * 50)):
            self.tick()


class TickPlayback:
    def __init__(self, source: LiveSource, volume_db: float = 0.0) -> None:
        self.source = source
        self.volume_db = volume_db
        self.stopped = False

    def next_frame(self) -> np.ndarray:
        frame = self.source.next_frame()
        if self.volume_db == 0.0:
            return frame
        scaled = frame.astype(np.float64) * 10 ** (self.volume_db / 20)
        return np.clip(np.round(scaled), -32768, 32767).astype(np.int16)

    def stop(self) -> None:
        self.stopped = True


def tick_call(session: TickSession) -> Call:
    call = Call(
        project_id="p",
        from_="+15550000001",
        to="+15550000002",
        direction="outbound-api",
        call_type="relay_sip_call",
        status=CallStatus.ANSWERED,
    )
    call.media = cast(Any, session)
    session.on_dtmf = call.dispatch_dtmf
    return call


class Emitted:
    """The events operations emit (what `Services.emit` would store and deliver)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, op: Operation, params: dict[str, Any]) -> None:
        self.events.append((op.kind, params))

    def params(self, kind: str) -> list[dict[str, Any]]:
        return [p for k, p in self.events if k == kind]


def tick_services(emitted: Emitted, recordings: Path | None = None, **extra: Any) -> Services:
    """The few `Services` members the operations under test use."""
    rows: dict[str, Any] = {}
    config = SimpleNamespace(
        targets=TargetPolicy.from_setting("allow"),
        media_host="127.0.0.1",
        recordings_dir=recordings,
        recording_url=lambda rid: f"http://127.0.0.1/recordings/{rid}",
        space_id="space",
    )
    store = SimpleNamespace(
        save_recording=lambda row: rows.__setitem__(row["id"], row),
        delete_recording=lambda rid: rows.pop(rid, None),
        rows=rows,
    )
    return cast(Services, SimpleNamespace(emit=emitted, config=config, store=store, **extra))
