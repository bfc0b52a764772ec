"""A virtual SIP phone for testing voice applications, on callplane's own SIP and media stack.

The phone is a SIP user agent (`SipEndpoint`) with an RTP session of the media graph
(`MediaEngine` / `RtpSession`, jitter-buffered `TickFrames`), callplane's TTS for ``say``, its
sources for ``play``, RFC 4733 or in-band DTMF for ``press``, its `Recorder` for the evidence and
its speech recogniser for what it hears. Phones run on an event loop of their own in a
background thread (`PhoneRuntime`), so their API is plain synchronous calls usable from any
test, asyncio or not, and from the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

from callplane.media.dsp.dtmf import dtmf_digits
from callplane.media.dsp.vad import frame_dbov
from callplane.media.engine import MediaEngine, RtpSession, TickFrames
from callplane.media.recorder import Recorder
from callplane.media.sources import Frame, audio_file, pcm
from callplane.providers.asr import PocketSphinxRecognizer, RecognitionSession
from callplane.providers.tts import DefaultTts
from callplane.sip import sdp
from callplane.sip.endpoint import (
    Answered,
    Ended,
    Failed,
    IncomingCall,
    OutgoingCall,
    Ringing,
    SipCall,
    SipEndpoint,
)
from callplane.testing.match import (
    DEFAULT_THRESHOLD,
    Match,
    features,
    match,
    subsequence_distance,
)

T = TypeVar("T")
Speaker = Literal["remote", "phone"]

TICKS_PER_SECOND = 50
HOST = "127.0.0.1"
CODECS = ("PCMU", "PCMA")
# Trailing silence that ends an utterance: short, so a prompt is transcribed soon after it ends,
# long enough not to split a sentence at its commas.
END_SILENCE = 0.6
# After a deadline, an utterance still being spoken gets this long to finish before failing.
UTTERANCE_GRACE = 4.0
SILENCE_DBOV = -45.0
TONE_TOLERANCE_HZ = 20.0
TONE_MIN_DBOV = -45.0
TONE_MIN_SHARE = 0.25  # of the window's energy (two equal tones: about 0.5 each)
TONE_FRAMES = 5  # 100 ms of a steady tone
# The project's own English voices that expect_said also looks for by example (flite: slt and
# rms are DefaultTts's female and male defaults). Not awb: its renderings matched other prompts
# (3 false matches in bench/bench_expect_said.py); speech recognition alone serves it.
TEMPLATE_VOICES = ("slt", "rms", "kal")
TEMPLATE_EVERY = 15  # ticks of new audio between two searches by example (300 ms)
SEARCH_SECONDS = 30.0  # how far back a search by example looks at most
SAMPLES_PER_TICK = 160
FEATURE_HOP = 80  # samples per feature frame (match.features)


class PhoneError(AssertionError):
    """An expectation failed or the call did not do what was asked. The message carries the
    transcript so far and where the recording is."""


class CallFailed(PhoneError):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TranscriptEntry:
    at: float  # seconds since the call's media started
    who: Speaker  # "remote": what the phone heard; "phone": what it said or pressed
    text: str

    def __str__(self) -> str:
        return f"[{self.at:6.2f}s] {self.who:>6}: {self.text}"


class PhoneRuntime:
    """The event loop every phone of a process runs on, with the shared media engine, TTS and
    speech recogniser. Started on first use; `close()` ends it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="callplane-phones", daemon=True
        )
        self._thread.start()
        self.media = MediaEngine(HOST, (0, 0))
        self.tts = DefaultTts()
        # Decoded in-thread, no decoding processes: a phone lives for one test, and starting
        # three decoders (~1 s of CPU each) at the first prompt it hears starved its own media
        # on a busy machine (the prompt came out garbled in parallel CI runs).
        self.recognizer = PocketSphinxRecognizer(decode_processes=0)
        self.run(self.media.start())
        self._phonemes: dict[str, list[str] | None] = {}
        self._templates: dict[tuple[str, str], np.ndarray] = {}
        self._closed = False

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def template(self, voice: str, text: str) -> np.ndarray:
        key = (voice, text.lower())
        if key not in self._templates:
            audio = await self.tts.synthesize(text, voice=voice)
            self._templates[key] = await asyncio.to_thread(features, audio, trim=True)
        return self._templates[key]

    def phonetize(self, word: str) -> list[str] | None:
        if word not in self._phonemes:
            self._phonemes[word] = self.recognizer.pronounce(word)
        return self._phonemes[word]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self.run(self.media.stop(), timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.recognizer.close()


def _feed_until_done(session: RecognitionSession, frames: Sequence[Frame]) -> tuple[list[Any], int]:
    events: list[Any] = []
    for used, frame in enumerate(frames, 1):
        events.extend(session.feed(frame))
        if session.done:
            return events, used
    return events, len(frames)


class _Transcriber:
    """Continuous transcription of what the phone hears: one recognition session per
    utterance, opened again as soon as the previous one ended, fed off the loop."""

    def __init__(
        self,
        recognizer: PocketSphinxRecognizer,
        on_utterance: Callable[[float, str], None],
    ) -> None:
        self._rec = recognizer
        self._on_utterance = on_utterance
        self._pending: list[Frame] = []
        self._task: asyncio.Task[None] | None = None
        self._session: RecognitionSession | None = None
        self._base = 0  # frames fed before the current session opened
        self._fed = 0
        self._start = 0.0
        self.speaking = False
        self.closed = False

    def push(self, frame: Frame) -> None:
        if self.closed:
            return
        self._pending.append(frame)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())

    @property
    def busy(self) -> bool:
        """Speech is being heard or frames still wait for the recogniser."""
        return self.speaking or bool(self._pending)

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            i = 0
            while i < len(batch):
                if self._session is None:
                    self._session = await asyncio.to_thread(
                        self._rec.open_session,
                        end_silence_timeout=END_SILENCE,
                        timers_started=False,
                    )
                    self._base = self._fed
                session = self._session
                events, used = await asyncio.to_thread(_feed_until_done, session, batch[i:])
                i += used
                self._fed += used
                for event in events:
                    if event.type == "start_of_input":
                        self.speaking = True
                        self._start = self._base / TICKS_PER_SECOND + event.offset
                    elif event.terminal:
                        self.speaking = False
                        if event.text:
                            self._on_utterance(self._start, event.text)
                if session.done:
                    session.close()
                    self._session = None

    async def aclose(self) -> None:
        if self.speaking:  # the call ended mid-sentence: let the recogniser finish it
            silence = np.zeros(SAMPLES_PER_TICK, dtype=np.int16)
            for _ in range(int(END_SILENCE * TICKS_PER_SECOND) + 2):
                self.push(silence)
        self.closed = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        if self._session is not None:
            await asyncio.to_thread(self._session.close)
            self._session = None
        self.speaking = False


class Phone:
    """A virtual phone. ``server_sip`` ("host:port") is where names and numbers are called."""

    _names = itertools.count(1)

    def __init__(
        self,
        runtime: PhoneRuntime,
        *,
        name: str | None = None,
        server_sip: str | None = None,
        record_dir: str | Path | None = None,
        voice: str | None = "rms",
        threshold: float = DEFAULT_THRESHOLD,
        on_transcript: Callable[[TranscriptEntry], None] | None = None,
        template_voices: Sequence[str] = TEMPLATE_VOICES,
    ) -> None:
        self._rt = runtime
        self.name = name or f"phone{next(self._names)}"
        self.server_sip = server_sip
        self.voice = voice
        self.threshold = threshold
        self.on_transcript = on_transcript
        self.template_voices = tuple(template_voices)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if record_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="callplane-phone-")
            record_dir = self._tmp.name
        self._record_dir = Path(record_dir)
        self._record_dir.mkdir(parents=True, exist_ok=True)
        self.transcript: list[TranscriptEntry] = []
        self._calls = 0
        self._recording: Path | None = None
        self._recorder: Recorder | None = None
        self._session: RtpSession | None = None
        self._sip: SipCall | None = None
        self._transcriber: _Transcriber | None = None
        self._said_tick = 0  # audio before this tick was consumed by an expect_said
        self._ticks = 0
        self._inbound: list[Frame] = []
        self._changed: asyncio.Event | None = None
        self._ended: asyncio.Event | None = None
        self._incoming: asyncio.Queue[IncomingCall] | None = None
        self._follower: asyncio.Task[None] | None = None
        self.end_reason: str | None = None
        self._endpoint = SipEndpoint(HOST, 0, user_agent="callplane-phone")
        self._run(self._start())

    # ------------------------------------------------------------------ plumbing

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return self._rt.run(coro, timeout)

    async def _start(self) -> None:
        self._changed = asyncio.Event()
        self._ended = asyncio.Event()
        self._incoming = asyncio.Queue()
        self._endpoint.on_incoming = self._on_incoming
        await self._endpoint.start()

    async def _on_incoming(self, incoming: IncomingCall) -> None:
        assert self._incoming is not None
        await incoming.ringing()
        self._incoming.put_nowait(incoming)

    @property
    def uri(self) -> str:
        """Where to dial this phone (a `dial(to=...)` or SWML `connect` target)."""
        return f"sip:{self.name}@{HOST}:{self._endpoint.port}"

    @property
    def in_call(self) -> bool:
        return self._sip is not None and self._ended is not None and not self._ended.is_set()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    def _add(self, who: Speaker, text: str, at: float | None = None) -> None:
        entry = TranscriptEntry(
            round(self._ticks / TICKS_PER_SECOND if at is None else at, 2), who, text
        )
        self.transcript.append(entry)
        self.transcript.sort(key=lambda e: e.at)
        if self.on_transcript is not None:
            self.on_transcript(entry)
        self._notify()

    def _on_tick(self, frames: TickFrames) -> None:
        self._ticks += 1
        if self._recorder is not None:
            self._recorder.feed(frames)
        self._inbound.append(frames.inbound)
        if self._transcriber is not None:
            self._transcriber.push(frames.inbound)
        self._notify()

    async def _media(self, session: RtpSession, chosen: sdp.ChosenMedia) -> None:
        session.configure(
            remote=(chosen.remote_ip, chosen.remote_port),
            payload_type=chosen.payload_type,
            telephone_event_pt=chosen.telephone_event_pt,
            direction=chosen.direction,
        )
        if self._recorder is None:
            self._calls += 1
            self._recording = self._record_dir / f"{self.name}-call{self._calls}.wav"
            # speak (left) = the far end, what the phone heard; listen (right) = what it sent.
            self._recorder = Recorder(self._recording, stereo=True, direction="both")
            self._transcriber = _Transcriber(self._rt.recognizer, self._heard)
            session.add_listener(self._on_tick)

    def _heard(self, at: float, text: str) -> None:
        self._add("remote", text, at)

    def _follow_offers(self, call: SipCall, session: RtpSession) -> None:
        def reoffer(offer: bytes) -> bytes | None:
            try:
                answer, chosen = sdp.negotiate_answer(offer, HOST, session.local_port, CODECS)
            except sdp.SdpError:
                return None
            if chosen is None:
                return None
            session.configure(
                remote=(chosen.remote_ip, chosen.remote_port),
                payload_type=chosen.payload_type,
                telephone_event_pt=chosen.telephone_event_pt,
                direction=chosen.direction,
            )
            return answer

        call.on_offer = reoffer

    async def _follow(self, call: SipCall) -> None:
        while True:
            event = await call.events.get()
            if isinstance(event, Ended | Failed):
                self.end_reason = (
                    f"{event.by} {event.reason}"
                    if isinstance(event, Ended)
                    else f"{event.code} {event.reason}"
                )
                await self._teardown()
                return

    async def _teardown(self) -> None:
        if self._transcriber is not None:
            await self._transcriber.aclose()
        if self._session is not None:
            self._session.remove_listener(self._on_tick)
            await self._session.close()
        if self._recorder is not None:
            self._recorder.finish()
        if self._ended is not None:
            self._ended.set()
        self._notify()

    def _reset(self) -> None:
        if self.in_call:
            raise PhoneError(f"{self.name} is already in a call")
        self.transcript = []
        self._said_tick = 0
        self._ticks = 0
        self._inbound = []
        self._recorder = None
        self._transcriber = None
        self._session = None
        self._sip = None
        self.end_reason = None
        if self._ended is not None:
            self._rt.loop.call_soon_threadsafe(self._ended.clear)

    def _require_call(self) -> RtpSession:
        if self._session is None or self._sip is None:
            raise PhoneError(f"{self.name} has no call")
        return self._session

    # ------------------------------------------------------------------ calls

    def call(self, destination: str, timeout: float = 15.0) -> Phone:
        """Call a SIP URI, or a route name or number of the server (``server_sip``); returns
        once answered. Raises `CallFailed` with the final SIP status otherwise."""
        if destination.startswith(("sip:", "sips:")):
            target = destination
        elif self.server_sip:
            target = f"sip:{destination}@{self.server_sip}"
        else:
            raise ValueError(f"{destination!r} is not a sip: URI and the phone has no server")
        self._reset()
        self._run(self._call(target, timeout))
        return self

    async def _call(self, target: str, timeout: float) -> None:  # noqa: ASYNC109 - a deadline for the sync API
        session = await self._rt.media.open_session()
        self._session = session
        offer = sdp.build_offer(HOST, session.local_port, list(CODECS))
        call: OutgoingCall = self._endpoint.invite(
            target, f"sip:{self.name}@{HOST}:{self._endpoint.port}", offer, timeout=timeout
        )
        self._sip = call
        self._follow_offers(call, session)
        while True:
            event = await call.events.get()
            if isinstance(event, Ringing) and event.sdp:
                chosen = sdp.parse_answer(event.sdp, offer)
                if chosen is not None:
                    await self._media(session, chosen)
            elif isinstance(event, Answered):
                chosen = sdp.parse_answer(event.sdp or call.remote_sdp or b"", offer)
                if chosen is None:
                    await call.bye()
                    await self._teardown()
                    raise CallFailed(488, "no usable audio", f"{target}: no usable audio answer")
                await self._media(session, chosen)
                break
            elif isinstance(event, Failed | Ended):
                await self._teardown()
                code = event.code if isinstance(event, Failed) else 487
                reason = event.reason
                raise CallFailed(code, reason, f"{target} did not answer: {code} {reason}")
        self._follower = asyncio.get_running_loop().create_task(self._follow(call))

    def answer(self, timeout: float = 15.0) -> Phone:
        """Wait for a call to ring and answer it."""
        self._reset()
        self._run(self._answer(timeout))
        return self

    async def _next_incoming(self, timeout: float) -> IncomingCall:  # noqa: ASYNC109 - a deadline for the sync API
        assert self._incoming is not None
        try:
            async with asyncio.timeout(timeout):
                return await self._incoming.get()
        except TimeoutError:
            raise PhoneError(f"no call reached {self.uri} within {timeout} s") from None

    async def _answer(self, timeout: float) -> None:  # noqa: ASYNC109 - a deadline for the sync API
        incoming = await self._next_incoming(timeout)
        if incoming.remote_sdp is None:
            await incoming.reject(488, "Not Acceptable Here")
            raise PhoneError("the incoming call has no SDP offer")
        session = await self._rt.media.open_session()
        answer, chosen = sdp.negotiate_answer(incoming.remote_sdp, HOST, session.local_port, CODECS)
        if chosen is None:
            await incoming.reject(488, "Not Acceptable Here")
            await session.close()
            raise PhoneError("no codec in common with the caller")
        self._session = session
        self._sip = incoming
        self._follow_offers(incoming, session)
        await self._media(session, chosen)
        await incoming.answer(answer)
        self._follower = asyncio.get_running_loop().create_task(self._follow(incoming))

    def reject(self, code: int = 486, timeout: float = 15.0) -> None:
        """Wait for a call to ring and refuse it with a SIP status (486 Busy Here by default)."""
        self._run(self._reject(code, timeout))

    async def _reject(self, code: int, timeout: float) -> None:  # noqa: ASYNC109 - a deadline for the sync API
        incoming = await self._next_incoming(timeout)
        await incoming.reject(code)

    def hangup(self) -> None:
        if self._sip is None or not self.in_call:
            return
        self._run(self._hangup())

    async def _hangup(self) -> None:
        assert self._sip is not None
        self._add("phone", "[hangup]")
        await self._sip.bye()
        assert self._ended is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self._ended.wait()

    def close(self) -> None:
        """Hang up and stop the phone's SIP endpoint."""
        with contextlib.suppress(Exception):
            self.hangup()
        self._run(self._endpoint.stop())
        if self._tmp is not None and self._recording is None:
            self._tmp.cleanup()

    # ------------------------------------------------------------------ acting

    def say(self, text: str, *, voice: str | None = None, wait: bool = True) -> None:
        """Speak ``text`` into the call (callplane's TTS); returns when it was said."""
        self._run(self._say(text, voice, wait))

    async def _say(self, text: str, voice: str | None, wait: bool) -> None:
        session = self._require_call()
        audio = await self._rt.tts.synthesize(text, voice=voice or self.voice, gender="male")
        self._add("phone", text)
        handle = session.play(pcm(audio))
        if wait:
            await handle.done

    def play(self, wav: str | Path, *, wait: bool = True) -> None:
        """Play an audio file (WAV/MP3) into the call."""
        self._run(self._play(Path(wav), wait))

    async def _play(self, path: Path, wait: bool) -> None:
        session = self._require_call()
        source = await asyncio.to_thread(audio_file, path)
        self._add("phone", f"[play {path.name}]")
        handle = session.play(source)
        if wait:
            await handle.done

    def press(self, digits: str, *, inband: bool = False) -> None:
        """Press keys: RFC 4733 events, or DTMF tones in the audio with ``inband=True``."""
        self._run(self._press(digits, inband))

    async def _press(self, digits: str, inband: bool) -> None:
        session = self._require_call()
        self._add("phone", f"[DTMF {digits}{' in-band' if inband else ''}]")
        if inband:
            await session.play(pcm(dtmf_digits(digits))).done
        else:
            await session.send_digits(digits)

    # ------------------------------------------------------------------ listening

    def _evidence(self) -> str:
        lines = [str(e) for e in self.transcript] or ["(nothing heard or said)"]
        where = self._recording or "(no call, no recording)"
        return "transcript so far:\n  " + "\n  ".join(lines) + f"\nrecording: {where}"

    def _fail(self, what: str) -> PhoneError:
        return PhoneError(f"{self.name}: {what}\n{self._evidence()}")

    def _heard_since(self, tick: int) -> str:
        """What was recognised in utterances that started at or after ``tick``."""
        since = tick / TICKS_PER_SECOND - 0.05
        return " ".join(e.text for e in self.transcript if e.who == "remote" and e.at >= since)

    def expect_said(
        self, text: str, timeout: float = 5.0, *, threshold: float | None = None
    ) -> Match:
        """Wait until the far end says ``text``; only audio after what the previous successful
        expect_said matched counts. Two ways to hear it: speech recognition of what is heard,
        compared phonetically (``threshold``, default `DEFAULT_THRESHOLD`), and the phrase as
        the project's own TTS voices say it, searched for in the audio (match by example).
        Raises `PhoneError` with the transcript and the recording otherwise."""
        return self._run(self._expect_said(text, timeout, threshold or self.threshold))

    def _search(
        self, templates: list[tuple[str, np.ndarray]], start: int
    ) -> tuple[str, float, float, int]:
        """The best match by example in the audio from tick ``start`` on: (voice, distance,
        worst, tick where it ends)."""
        frames = self._inbound[start:]
        if not frames:
            return "", math.inf, math.inf, start
        heard = features(np.concatenate(frames))
        best = ("", math.inf, math.inf, start)
        for voice, template in templates:
            distance, worst, end = subsequence_distance(template, heard)
            if distance < best[1]:
                ticks = (end * FEATURE_HOP + 2 * FEATURE_HOP) // SAMPLES_PER_TICK + 1
                best = (voice, distance, worst, start + ticks)
        return best

    async def _wait_change(self, deadline: float) -> bool:
        assert self._changed is not None
        self._changed.clear()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(remaining):
                await self._changed.wait()
        return True

    def said(self, text: str, *, threshold: float | None = None) -> Match:
        """Whether ``text`` was said since the previous successful expect_said, judged on what
        was heard so far (no waiting, nothing consumed)."""
        return self._run(self._said(text, threshold or self.threshold))

    async def _said(self, text: str, threshold: float) -> Match:
        templates = [(v, await self._rt.template(v, text)) for v in self.template_voices]
        found, _ = await self._check(text, threshold, templates, search=True)
        return found

    async def _check(
        self,
        text: str,
        threshold: float,
        templates: list[tuple[str, np.ndarray]],
        *,
        search: bool,
        previous: tuple[str, float, float, int] = ("", math.inf, math.inf, 0),
    ) -> tuple[Match, tuple[str, float, float, int]]:
        """Both ways of hearing ``text`` in what came after ``_said_tick``; consumes nothing.
        ``search=False`` reuses the ``previous`` search by example."""
        found = match(text, self._heard_since(self._said_tick), threshold, self._rt.phonetize)
        example = previous
        if search and templates:
            start = max(self._said_tick, len(self._inbound) - int(SEARCH_SECONDS * 50))
            example = await asyncio.to_thread(self._search, templates, start)
        voice, distance, worst, _ = example
        return (
            Match(
                found.expected,
                found.heard,
                found.score,
                threshold,
                None if math.isinf(distance) else round(distance, 2),
                None if math.isinf(worst) else round(worst, 2),
                voice or None,
            ),
            example,
        )

    async def _expect_said(self, text: str, within: float, threshold: float) -> Match:
        timeout = within
        self._require_call()
        templates = [(v, await self._rt.template(v, text)) for v in self.template_voices]
        deadline = time.monotonic() + timeout
        hard = deadline + UTTERANCE_GRACE
        searched = -TEMPLATE_EVERY
        example: tuple[str, float, float, int] = ("", math.inf, math.inf, 0)
        while True:
            search = len(self._inbound) - searched >= TEMPLATE_EVERY
            if search:
                searched = len(self._inbound)
            found, example = await self._check(
                text, threshold, templates, search=search, previous=example
            )
            if found.by_speech:
                self._said_tick = self._ticks
                return found
            if found.by_example:
                self._said_tick = example[3]
                return found
            busy = self._transcriber is not None and self._transcriber.busy
            now = time.monotonic()
            if now >= (hard if busy else deadline) or (not self.in_call and not busy):
                raise self._fail(
                    f"expected to hear {text!r} within {timeout} s; {found.describe()}"
                )
            await self._wait_change(hard if busy else deadline)

    def heard_text(self, seconds: float) -> str:
        """Listen for ``seconds`` and return what was recognised in that time."""
        return self._run(self._heard_text(seconds))

    async def _heard_text(self, seconds: float) -> str:
        start = self._ticks
        await asyncio.sleep(seconds)
        hard = time.monotonic() + UTTERANCE_GRACE
        while self._transcriber is not None and self._transcriber.busy:
            if not await self._wait_change(hard):
                break
        return self._heard_since(start)

    def expect_tone(self, hz: float, timeout: float = 5.0) -> None:
        """Wait for a steady tone at ``hz`` (±20 Hz, 100 ms) in what the phone hears."""
        self._run(self._expect_frames(_ToneWatch(hz), f"a {hz:g} Hz tone", timeout))

    def expect_silence(self, seconds: float, timeout: float | None = None) -> None:
        """Wait for ``seconds`` of silence (below -45 dBov) in what the phone hears."""
        limit = seconds + 5.0 if timeout is None else timeout
        self._run(self._expect_frames(_SilenceWatch(seconds), f"{seconds:g} s of silence", limit))

    async def _expect_frames(self, watch: _Watch, what: str, timeout: float) -> None:  # noqa: ASYNC109 - a deadline for the sync API
        self._require_call()
        index = len(self._inbound)
        deadline = time.monotonic() + timeout
        while True:
            frames, index = self._inbound[index:], len(self._inbound)
            if watch.feed(frames):
                return
            if not self.in_call or not await self._wait_change(deadline):
                raise self._fail(f"expected {what} within {timeout} s")

    def expect_hangup(self, timeout: float = 10.0) -> str:
        """Wait for the call to end; returns how it ended ("remote bye", ...)."""
        return self._run(self._expect_hangup(timeout))

    async def _expect_hangup(self, timeout: float) -> str:  # noqa: ASYNC109 - a deadline for the sync API
        assert self._ended is not None
        if self._sip is None:
            raise self._fail("expected a hangup, but there is no call")
        try:
            async with asyncio.timeout(timeout):
                await self._ended.wait()
        except TimeoutError:
            raise self._fail(f"expected the call to end within {timeout} s") from None
        return self.end_reason or "ended"

    def wait(self, seconds: float) -> None:
        """Keep the call going (and listening) for ``seconds``."""
        time.sleep(seconds)

    # ------------------------------------------------------------------ evidence

    def recording(self) -> Path:
        """The stereo WAV of the last call: left what the phone heard, right what it sent."""
        if self._recording is None:
            raise PhoneError(f"{self.name} has not had a call")
        return self._recording

    def transcript_text(self) -> str:
        return "\n".join(str(e) for e in self.transcript)


class _Watch:
    def feed(self, frames: Iterable[Frame]) -> bool:  # pragma: no cover - interface
        raise NotImplementedError


class _ToneWatch(_Watch):
    """A tone at ``hz`` among others (ringback is two): over 40 ms windows, the energy within
    ±TONE_TOLERANCE_HZ of ``hz`` is loud enough and a fair share of the window's."""

    def __init__(self, hz: float) -> None:
        self.hz = hz
        self._prev = np.zeros(SAMPLES_PER_TICK)
        self._window = np.hanning(2 * SAMPLES_PER_TICK)
        freqs = np.fft.rfftfreq(4 * SAMPLES_PER_TICK, 1 / 8000)  # zero-padded: 12.5 Hz bins
        self._band = np.abs(freqs - hz) <= TONE_TOLERANCE_HZ
        self._run = 0

    def feed(self, frames: Iterable[Frame]) -> bool:
        for frame in frames:
            cur = np.asarray(frame, dtype=np.float64)
            x = np.concatenate([self._prev, cur]) * self._window
            self._prev = cur
            power = np.abs(np.fft.rfft(x, 4 * SAMPLES_PER_TICK)) ** 2
            total = float(power.sum())
            share = float(power[self._band].sum()) / total if total > 0 else 0.0
            near = share >= TONE_MIN_SHARE and frame_dbov(frame) >= TONE_MIN_DBOV
            self._run = self._run + 1 if near else 0
            if self._run >= TONE_FRAMES:
                return True
        return False


class _SilenceWatch(_Watch):
    def __init__(self, seconds: float) -> None:
        self._need = max(1, math.ceil(seconds * TICKS_PER_SECOND))
        self._run = 0

    def feed(self, frames: Iterable[Frame]) -> bool:
        for frame in frames:
            quiet = not np.any(frame) or frame_dbov(frame) < SILENCE_DBOV
            self._run = self._run + 1 if quiet else 0
            if self._run >= self._need:
                return True
        return False
