"""Turning play items (REST `calling.play` items and SWML sound strings) into media sources.

Both surfaces reduce to the canonical REST item `{"type", "params"}` first, so there is one
resolver: `audio` URLs are fetched once into the data directory's cache, `tts` goes through the
text-to-speech provider, `silence` and `ringtone` are generated.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
import numpy as np
import numpy.typing as npt

from callplane.media import sources
from callplane.media.sources import Source

#: The largest audio file a play fetches; a larger one is the play's error, not a memory spike.
MAX_AUDIO_BYTES = 50 * 1024 * 1024


class PlayItemError(Exception):
    """An item that cannot be played; becomes the play's `error` event with this reason."""


Gender = Literal["male", "female"]


class SpeechSynthesizer(Protocol):
    async def synthesize(
        self, text: str, language: str, voice: str | None, gender: Gender
    ) -> npt.NDArray[np.int16]: ...


_RING = re.compile(r"^ring: ?(?:([0-9.]+): ?)?([a-zA-Z]{2}(?:-old)?)$")
_SILENCE = re.compile(r"^silence: ?([0-9.]+)$")


def swml_sound_to_item(sound: str) -> dict[str, Any]:
    """`say:`, `silence:`, `ring:` and http(s) sound strings of SWML `play` as REST items."""
    if sound.startswith("say:"):
        return {"type": "tts", "params": {"text": sound[4:].lstrip()}}
    if m := _SILENCE.match(sound):
        return {"type": "silence", "params": {"duration": float(m.group(1))}}
    if m := _RING.match(sound):
        params: dict[str, Any] = {"name": m.group(2).lower()}
        if m.group(1):
            params["duration"] = float(m.group(1))
        return {"type": "ringtone", "params": params}
    if sound.startswith(("http://", "https://")):
        return {"type": "audio", "params": {"url": sound}}
    raise PlayItemError(f"unsupported sound {sound!r}")


class AudioResolver:
    def __init__(
        self,
        cache_dir: Path,
        http: httpx.AsyncClient,
        tts: SpeechSynthesizer,
        *,
        max_bytes: int = MAX_AUDIO_BYTES,
    ) -> None:
        self._cache_dir = cache_dir
        self._max_bytes = max_bytes
        self._http = http
        self._tts = tts
        self._fetches: dict[str, asyncio.Future[Path]] = {}

    async def resolve(
        self, item: dict[str, Any], *, language: str, voice: str | None, gender: str
    ) -> Source:
        kind = item.get("type")
        params = item.get("params") or {}
        try:
            if kind == "silence":
                return sources.silence(float(params["duration"]))
            if kind == "ringtone":
                duration = params.get("duration")
                return sources.ringtone(
                    str(params["name"]), None if duration is None else float(duration)
                )
            if kind == "tts":
                samples = await self._tts.synthesize(
                    str(params["text"]),
                    str(params.get("language") or language),
                    params.get("voice") or voice,
                    "male" if (params.get("gender") or gender) == "male" else "female",
                )
                return sources.pcm(samples)
            if kind == "audio":
                path = await self._fetch(str(params["url"]))
                try:
                    return await asyncio.to_thread(sources.audio_file, path)
                except Exception:
                    # Not audio: forget it so a fixed file at the same URL is fetched again.
                    path.unlink(missing_ok=True)
                    raise
        except PlayItemError:
            raise
        except (KeyError, ValueError, OSError, RuntimeError) as exc:
            raise PlayItemError(f"cannot play {kind} item: {exc}") from exc
        raise PlayItemError(f"unknown play item type {kind!r}")

    async def fetch(self, url: str) -> Path:
        """The file at ``url``, fetched like audio (same target policy, size cap and cache):
        fax documents use it."""
        return await self._fetch(url)

    async def _fetch(self, url: str) -> Path:
        """Download once per URL; concurrent plays of the same URL share the download."""
        path = self._cache_dir / hashlib.sha256(url.encode()).hexdigest()
        if path.exists():
            return path
        pending = self._fetches.get(url)
        if pending is None:
            pending = asyncio.ensure_future(self._download(url, path))
            self._fetches[url] = pending
            pending.add_done_callback(lambda _: self._fetches.pop(url, None))
        return await asyncio.shield(pending)

    async def _download(self, url: str, path: Path) -> Path:
        """Stream the body to a partial file, so a large answer is never held in memory."""
        self._cache_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
        try:
            async with self._http.stream("GET", url, follow_redirects=True) as response:
                if response.status_code != 200:
                    raise PlayItemError(f"cannot fetch {url}: HTTP {response.status_code}")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self._max_bytes:
                    raise PlayItemError(f"cannot fetch {url}: over {self._max_bytes} bytes")
                size = 0
                with partial.open("wb") as out:
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > self._max_bytes:
                            raise PlayItemError(f"cannot fetch {url}: over {self._max_bytes} bytes")
                        out.write(chunk)
        except httpx.HTTPError as exc:
            partial.unlink(missing_ok=True)
            raise PlayItemError(f"cannot fetch {url}: {exc}") from exc
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(path)
        return path
