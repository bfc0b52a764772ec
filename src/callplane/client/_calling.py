"""``client.calling``: one typed method per Calling API command (reference §3-§5).

Every method is written once, here, and is generic over what sending a command returns: the sync
client builds ``Calling[dict[str, Any]]`` (the decoded response), the async client
``Calling[Coroutine[Any, Any, dict[str, Any]]]`` (await it). Methods only assemble
``(command, call_id, params)``; the client they belong to does the I/O.

Conventions shared by every method:

* ``call_id`` (the call to control) is the first argument, except for `Calling.dial` and
  `Calling.update`, which have no top-level call id.
* Keyword arguments left ``None`` are not sent. Keywords a method does not declare are sent as
  given, so parameters added to the server later need no client release.
* Values are sent as written: nested (spec) and flat (shortcut) shapes both reach the server as is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, Literal, TypeVar

from callplane.client._types import (
    AiReset,
    AiRole,
    CallerSide,
    CollectDigits,
    CollectSpeech,
    DetectConfig,
    Direction,
    EndReason,
    Gender,
    HttpMethod,
    LiveTranscribeAction,
    LiveTranslateAction,
    PlayItem,
    RecordAudio,
    RecordConfig,
    ReferDevice,
    SidecarAction,
    SidecarParams,
    SidecarPermissions,
    SpeechEngine,
    StatusEvent,
    StreamTrack,
    TapConfig,
    TapDevice,
)

R = TypeVar("R")

#: What a client hands to `Calling`: send ``(command, call_id, params)`` and return the result.
Sender = Callable[[str, str | None, dict[str, Any]], R]


def _params(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


class Calling(Generic[R]):
    """The Calling API commands (``POST /api/calling/calls``), as ``client.calling``."""

    __slots__ = ("_send",)

    def __init__(self, send: Sender[R]) -> None:
        self._send = send

    def send_command(
        self, command: str, call_id: str | None = None, params: Mapping[str, Any] | None = None
    ) -> R:
        """Send any command by name, e.g. one newer than this client.

        ``params`` goes on the wire unchanged (``{}`` when omitted); ``call_id`` becomes the
        top-level ``id`` when given.
        """
        return self._send(command, call_id, dict(params or {}))

    # -- call lifecycle ---------------------------------------------------------------------------

    def dial(
        self,
        *,
        from_: str,
        to: str | None = None,
        url: str | None = None,
        swml: Mapping[str, Any] | str | None = None,
        caller_id: str | None = None,
        fallback_url: str | None = None,
        status_url: str | None = None,
        status_events: Sequence[StatusEvent] | None = None,
        url_method: HttpMethod | None = None,
        username: str | None = None,
        password: str | None = None,
        to_script: Mapping[str, Any] | str | None = None,
        codecs: Sequence[str] | str | None = None,
        timeout: int | None = None,
        max_price_per_minute: float | None = None,
        send_digits: str | None = None,
        region: Sequence[str] | str | None = None,
        custom_variables: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> R:
        """Create an outbound call (``dial``); the response is the new call, ``status: "queued"``.

        Args:
            from_: caller address (E.164, or a SIP URI for SIP targets); sent as ``from``.
            to: destination: E.164 number, ``sip:``/``sips:`` URI, ``verto:``, ``client:`` or a
                Fabric address. May be omitted when ``to_script`` is given.
            url: URL of the SWML that drives the call. Exactly one of ``url`` / ``swml``.
            swml: inline SWML document that drives the call.
            caller_id: caller ID shown to the callee.
            fallback_url: SWML URL used when ``url`` fails.
            status_url: receives call-state webhooks.
            status_events: which states go to ``status_url`` (server default ``["ended"]``).
            url_method: ``GET`` or ``POST`` (default) for fetching ``url``.
            username: SIP digest username when ``to`` is a SIP URI.
            password: SIP digest password when ``to`` is a SIP URI.
            to_script: SWML (object, JSON/YAML string or URL) run at the destination end.
            codecs: offered codecs, a list (``["PCMU", "OPUS"]``) or a comma-separated string.
            timeout: ring timeout in seconds (1-600).
            max_price_per_minute: refuse routes costing more per minute.
            send_digits: DTMF sent after answer (``0-9 A-D * # w ,``).
            region: preferred media region(s), in priority order.
            custom_variables: up to 20 string variables exposed to the SWML as ``${envs.<key>}``.
        """
        params = {"from": from_}
        params.update(
            _params(
                to=to,
                url=url,
                swml=swml,
                caller_id=caller_id,
                fallback_url=fallback_url,
                status_url=status_url,
                status_events=status_events,
                url_method=url_method,
                username=username,
                password=password,
                to_script=to_script,
                codecs=codecs,
                timeout=timeout,
                max_price_per_minute=max_price_per_minute,
                send_digits=send_digits,
                region=region,
                custom_variables=custom_variables,
                **extra,
            )
        )
        return self._send("dial", None, params)

    def update(
        self,
        *,
        id: str,
        url: str | None = None,
        swml: Mapping[str, Any] | str | None = None,
        status: Literal["canceled", "completed"] | None = None,
        fallback_url: str | None = None,
        status_url: str | None = None,
        **extra: Any,
    ) -> R:
        """Change a live call (``update``): cancel it, complete it, or redirect it to new SWML.

        Args:
            id: the call to update (sent inside ``params``).
            url: new SWML URL to redirect an answered call to.
            swml: new inline SWML to redirect an answered call to.
            status: ``"canceled"`` (before answer) or ``"completed"`` (hang up an answered call).
            fallback_url: SWML URL used when ``url`` fails.
            status_url: receives call-state webhooks.
        """
        return self._send(
            "update",
            None,
            _params(
                id=id,
                url=url,
                swml=swml,
                status=status,
                fallback_url=fallback_url,
                status_url=status_url,
                **extra,
            ),
        )

    def end(self, call_id: str, *, reason: EndReason | None = None, **extra: Any) -> R:
        """Hang up the call (``calling.end``).

        Args:
            reason: ``hangup`` (normal), ``cancel``, ``busy``, ``noAnswer``, ``decline``, ``error``.
        """
        return self._send("calling.end", call_id, _params(reason=reason, **extra))

    def transfer(self, call_id: str, *, dest: Mapping[str, Any] | str, **extra: Any) -> R:
        """Hand the call to another destination (``calling.transfer``); the current SWML stops.

        Args:
            dest: SIP URI, phone number, SWML URL, or an inline SWML document.
        """
        return self._send("calling.transfer", call_id, _params(dest=dest, **extra))

    def disconnect(self, call_id: str, **extra: Any) -> R:
        """Unbridge the call without hanging up either leg (``calling.disconnect``)."""
        return self._send("calling.disconnect", call_id, _params(**extra))

    # -- playback ---------------------------------------------------------------------------------

    def play(
        self,
        call_id: str,
        *,
        play: Sequence[PlayItem],
        control_id: str | None = None,
        volume: float | None = None,
        direction: Direction | None = None,
        loop: int | None = None,
        language: str | None = None,
        voice: str | None = None,
        gender: Gender | None = None,
        status_url: str | None = None,
        **extra: Any,
    ) -> R:
        """Play audio files, TTS, silence or ringtones, in order (``calling.play``).

        Args:
            play: the media items, e.g. ``[{"type": "tts", "params": {"text": "Hello!"}}]``.
            control_id: names this playback for `play_pause` / `play_stop` / … and its webhooks.
            volume: gain in dB, -40 to 40 (default 0).
            direction: ``listen`` (default: only the caller hears), ``speak`` or ``both``.
            loop: total plays; 0 repeats forever (default 1).
            language: default TTS language (default ``en-US``).
            voice: default TTS voice.
            gender: default TTS gender, ``male`` or ``female``.
            status_url: receives playback webhooks.
        """
        return self._send(
            "calling.play",
            call_id,
            _params(
                play=play,
                control_id=control_id,
                volume=volume,
                direction=direction,
                loop=loop,
                language=language,
                voice=voice,
                gender=gender,
                status_url=status_url,
                **extra,
            ),
        )

    def play_pause(self, call_id: str, *, control_id: str, **extra: Any) -> R:
        """Pause a playback (``calling.play.pause``).

        Args:
            control_id: the playback to pause.
        """
        return self._send("calling.play.pause", call_id, _params(control_id=control_id, **extra))

    def play_resume(self, call_id: str, *, control_id: str, **extra: Any) -> R:
        """Resume a paused playback (``calling.play.resume``).

        Args:
            control_id: the playback to resume.
        """
        return self._send("calling.play.resume", call_id, _params(control_id=control_id, **extra))

    def play_stop(self, call_id: str, *, control_id: str, **extra: Any) -> R:
        """Stop a playback (``calling.play.stop``).

        Args:
            control_id: the playback to stop.
        """
        return self._send("calling.play.stop", call_id, _params(control_id=control_id, **extra))

    def play_volume(self, call_id: str, *, control_id: str, volume: float, **extra: Any) -> R:
        """Change a playback's volume (``calling.play.volume``).

        Args:
            control_id: the playback to adjust.
            volume: gain in dB, -40 to 40.
        """
        return self._send(
            "calling.play.volume", call_id, _params(control_id=control_id, volume=volume, **extra)
        )

    # -- recording --------------------------------------------------------------------------------

    def record(
        self,
        call_id: str,
        *,
        control_id: str | None = None,
        record: RecordConfig | None = None,
        audio: RecordAudio | None = None,
        status_url: str | None = None,
        **extra: Any,
    ) -> R:
        """Start recording the call (``calling.record``); the file URL arrives in the ``finished``
        record webhook.

        Args:
            control_id: names this recording for `record_pause` / `record_stop` / … and webhooks.
            record: the spec shape, ``{"audio": {"format": "wav", "beep": True, ...}}``.
            audio: shortcut for ``record={"audio": ...}`` (sent as ``params.audio``).
            status_url: receives record webhooks, including ``finished`` with the URL.
        """
        return self._send(
            "calling.record",
            call_id,
            _params(
                control_id=control_id,
                record=record,
                audio=audio,
                status_url=status_url,
                **extra,
            ),
        )

    def record_pause(
        self,
        call_id: str,
        *,
        control_id: str,
        behavior: Literal["skip", "silence"] | None = None,
        **extra: Any,
    ) -> R:
        """Pause a recording (``calling.record.pause``).

        Args:
            control_id: the recording to pause.
            behavior: ``skip`` (default: drop the paused audio) or ``silence`` (keep timing).
        """
        return self._send(
            "calling.record.pause",
            call_id,
            _params(control_id=control_id, behavior=behavior, **extra),
        )

    def record_resume(self, call_id: str, *, control_id: str, **extra: Any) -> R:
        """Resume a paused recording (``calling.record.resume``).

        Args:
            control_id: the recording to resume.
        """
        return self._send("calling.record.resume", call_id, _params(control_id=control_id, **extra))

    def record_stop(self, call_id: str, *, control_id: str, **extra: Any) -> R:
        """Stop a recording (``calling.record.stop``).

        Args:
            control_id: the recording to stop.
        """
        return self._send("calling.record.stop", call_id, _params(control_id=control_id, **extra))

    # -- input collection and detection -----------------------------------------------------------

    def collect(
        self,
        call_id: str,
        *,
        control_id: str,
        digits: CollectDigits | None = None,
        speech: CollectSpeech | None = None,
        initial_timeout: float | None = None,
        continuous: bool | None = None,
        partial_results: bool | None = None,
        send_start_of_input: bool | None = None,
        start_input_timers: bool | None = None,
        status_url: str | None = None,
        **extra: Any,
    ) -> R:
        """Gather DTMF and/or speech (``calling.collect``); give ``digits``, ``speech`` or both.

        Args:
            control_id: names this collect for `collect_stop` and its webhooks.
            digits: DTMF settings, e.g. ``{"max": 4, "terminators": "#"}``.
            speech: speech settings, e.g. ``{"end_silence_timeout": 2.0}``.
            initial_timeout: seconds to wait for the first input.
            continuous: keep collecting after each result until `collect_stop` (default False).
            partial_results: also deliver partial results (default False).
            send_start_of_input: emit a ``start_of_input`` event when input begins (default False).
            start_input_timers: start ``initial_timeout`` now; when False (the server default)
                it waits for `collect_start_input_timers`.
            status_url: receives collect results.
        """
        return self._send(
            "calling.collect",
            call_id,
            _params(
                control_id=control_id,
                digits=digits,
                speech=speech,
                initial_timeout=initial_timeout,
                continuous=continuous,
                partial_results=partial_results,
                send_start_of_input=send_start_of_input,
                start_input_timers=start_input_timers,
                status_url=status_url,
                **extra,
            ),
        )

    def collect_stop(self, call_id: str, *, control_id: str, **extra: Any) -> R:
        """Stop a collect (``calling.collect.stop``).

        Args:
            control_id: the collect to stop.
        """
        return self._send("calling.collect.stop", call_id, _params(control_id=control_id, **extra))

    def collect_start_input_timers(self, call_id: str, *, control_id: str, **extra: Any) -> R:
        """Start the input timers of a collect begun with ``start_input_timers=False``
        (``calling.collect.start_input_timers``).

        Args:
            control_id: the collect whose timers start.
        """
        return self._send(
            "calling.collect.start_input_timers",
            call_id,
            _params(control_id=control_id, **extra),
        )

    def detect(
        self,
        call_id: str,
        *,
        control_id: str,
        detect: DetectConfig,
        timeout: float | None = None,
        status_url: str | None = None,
        **extra: Any,
    ) -> R:
        """Run an answering-machine, fax-tone or DTMF detector (``calling.detect``).

        Args:
            control_id: names this detector for `detect_stop` and its webhooks.
            detect: ``{"type": "machine" | "fax" | "digit", "params": {...}}``.
            timeout: maximum run time in seconds (default 30).
            status_url: receives detection results.
        """
        return self._send(
            "calling.detect",
            call_id,
            _params(
                control_id=control_id,
                detect=detect,
                timeout=timeout,
                status_url=status_url,
                **extra,
            ),
        )

    def detect_stop(self, call_id: str, *, control_id: str, **extra: Any) -> R:
        """Stop a detector (``calling.detect.stop``).

        Args:
            control_id: the detector to stop.
        """
        return self._send("calling.detect.stop", call_id, _params(control_id=control_id, **extra))

    # -- media forks ------------------------------------------------------------------------------

    def tap(
        self,
        call_id: str,
        *,
        control_id: str,
        tap: TapConfig,
        device: TapDevice,
        status_url: str | None = None,
        **extra: Any,
    ) -> R:
        """Fork the call's audio to an RTP or WebSocket endpoint (``calling.tap``).

        Args:
            control_id: names this tap for `tap_stop` and its webhooks.
            tap: ``{"type": "audio", "params": {"direction": "listen" | "speak" | "both"}}``.
            device: ``{"type": "rtp", "params": {"addr", "port", "codec"?, "ptime"?}}`` or
                ``{"type": "ws", "params": {"uri", "codec"?}}``.
            status_url: receives tap webhooks.
        """
        return self._send(
            "calling.tap",
            call_id,
            _params(
                control_id=control_id,
                tap=tap,
                device=device,
                status_url=status_url,
                **extra,
            ),
        )

    def tap_stop(self, call_id: str, *, control_id: str, **extra: Any) -> R:
        """Stop a tap (``calling.tap.stop``).

        Args:
            control_id: the tap to stop.
        """
        return self._send("calling.tap.stop", call_id, _params(control_id=control_id, **extra))

    def stream(
        self,
        call_id: str,
        *,
        control_id: str,
        url: str,
        name: str | None = None,
        codec: str | None = None,
        track: StreamTrack | None = None,
        authorization_bearer_token: str | None = None,
        custom_parameters: Mapping[str, Any] | None = None,
        status_url: str | None = None,
        status_url_method: HttpMethod | None = None,
        **extra: Any,
    ) -> R:
        """Stream the call's audio to a ``wss://`` WebSocket (``calling.stream``).

        Args:
            control_id: names this stream for `stream_stop` and its webhooks.
            url: the ``wss://`` endpoint.
            name: friendly name echoed in events.
            codec: e.g. ``PCMU``, ``PCMA``, ``OPUS``.
            track: ``inbound_track`` (default), ``outbound_track`` or ``both_tracks``.
            authorization_bearer_token: sent as ``Authorization: Bearer …`` on the handshake.
            custom_parameters: metadata passed to the WebSocket endpoint.
            status_url: receives stream webhooks.
            status_url_method: ``POST`` (default) or ``GET``.
        """
        return self._send(
            "calling.stream",
            call_id,
            _params(
                control_id=control_id,
                url=url,
                name=name,
                codec=codec,
                track=track,
                authorization_bearer_token=authorization_bearer_token,
                custom_parameters=custom_parameters,
                status_url=status_url,
                status_url_method=status_url_method,
                **extra,
            ),
        )

    def stream_stop(self, call_id: str, *, control_id: str, **extra: Any) -> R:
        """Stop a stream (``calling.stream.stop``).

        Args:
            control_id: the stream to stop.
        """
        return self._send("calling.stream.stop", call_id, _params(control_id=control_id, **extra))

    def denoise(self, call_id: str, **extra: Any) -> R:
        """Turn on noise reduction for the call (``calling.denoise``)."""
        return self._send("calling.denoise", call_id, _params(**extra))

    def denoise_stop(self, call_id: str, **extra: Any) -> R:
        """Turn off noise reduction (``calling.denoise.stop``)."""
        return self._send("calling.denoise.stop", call_id, _params(**extra))

    # -- transcription ----------------------------------------------------------------------------

    def transcribe(
        self, call_id: str, *, control_id: str, status_url: str | None = None, **extra: Any
    ) -> R:
        """Transcribe the whole call in the background (``calling.transcribe``); one per call.

        Args:
            control_id: names this transcription for `transcribe_stop`.
            status_url: receives ``calling.transcript.completed`` / ``failed``.
        """
        return self._send(
            "calling.transcribe",
            call_id,
            _params(control_id=control_id, status_url=status_url, **extra),
        )

    def transcribe_stop(self, call_id: str, *, control_id: str, **extra: Any) -> R:
        """Stop the background transcription (``calling.transcribe.stop``).

        Args:
            control_id: the transcription to stop.
        """
        return self._send(
            "calling.transcribe.stop", call_id, _params(control_id=control_id, **extra)
        )

    def live_transcribe(
        self,
        call_id: str,
        *,
        action: LiveTranscribeAction | Literal["start", "summarize", "stop"],
        lang: str | None = None,
        direction: Sequence[CallerSide] | None = None,
        webhook: str | None = None,
        live_events: bool | None = None,
        ai_summary: bool | None = None,
        ai_summary_prompt: str | None = None,
        speech_engine: SpeechEngine | None = None,
        speech_timeout: int | None = None,
        vad_silence_ms: int | None = None,
        vad_thresh: int | None = None,
        debug_level: int | None = None,
        **extra: Any,
    ) -> R:
        """Start, summarize or stop real-time transcription (``calling.live_transcribe``).

        Spec form: ``action={"start": {"lang": "en-US", "direction": [...]}}``, ``action="stop"``.
        Shortcut: ``action="start"`` with the start fields as keywords (``lang="en"``).

        Args:
            action: ``{"start": {...}}``, ``{"summarize": {...}}``, ``"stop"``, or the shortcut
                names ``"start"`` / ``"summarize"``.
            lang: transcription language (start).
            direction: sides to transcribe, ``local-caller`` / ``remote-caller`` (start).
            webhook: receives transcription events (start).
            live_events: send utterances as they are recognized (start).
            ai_summary: summarize when transcription ends (start).
            ai_summary_prompt: prompt for that summary (start).
            speech_engine: ``deepgram`` (default) or ``google`` (start).
            speech_timeout: milliseconds (start, default 60000).
            vad_silence_ms: end-of-utterance silence in milliseconds (start).
            vad_thresh: voice activity threshold, 0-1800 (start, default 400).
            debug_level: 0-2 (start).
        """
        return self._send(
            "calling.live_transcribe",
            call_id,
            _params(
                action=action,
                lang=lang,
                direction=direction,
                webhook=webhook,
                live_events=live_events,
                ai_summary=ai_summary,
                ai_summary_prompt=ai_summary_prompt,
                speech_engine=speech_engine,
                speech_timeout=speech_timeout,
                vad_silence_ms=vad_silence_ms,
                vad_thresh=vad_thresh,
                debug_level=debug_level,
                **extra,
            ),
        )

    def live_translate(
        self,
        call_id: str,
        *,
        action: LiveTranslateAction | Literal["start", "summarize", "inject", "stop"],
        status_url: str | None = None,
        from_lang: str | None = None,
        to_lang: str | None = None,
        direction: Sequence[CallerSide] | None = None,
        from_voice: str | None = None,
        to_voice: str | None = None,
        filter_from: str | None = None,
        filter_to: str | None = None,
        webhook: str | None = None,
        live_events: bool | None = None,
        ai_summary: bool | None = None,
        ai_summary_prompt: str | None = None,
        speech_engine: SpeechEngine | None = None,
        speech_timeout: int | None = None,
        vad_silence_ms: int | None = None,
        vad_thresh: int | None = None,
        debug_level: int | None = None,
        **extra: Any,
    ) -> R:
        """Start, summarize, inject into or stop real-time translation (``calling.live_translate``).

        Spec form: ``action={"start": {"from_lang": "en", "to_lang": "es", "direction": [...]}}``.
        Shortcut: ``action="start"`` with the start fields as keywords.

        Args:
            action: ``{"start": …}``, ``{"summarize": …}``,
                ``{"inject": {"message", "direction"}}``, ``"stop"``, or a shortcut name.
            status_url: receives translation-session webhooks.
            from_lang: language spoken by the caller (start).
            to_lang: language to translate to (start).
            direction: sides to translate, ``local-caller`` / ``remote-caller`` (start).
            from_voice: TTS voice for speech into ``from_lang``, e.g. ``elevenlabs.josh`` (start).
            to_voice: TTS voice for speech into ``to_lang`` (start).
            filter_from: tone filter (``polite``, ``professional``, … or ``prompt:<text>``) (start).
            filter_to: tone filter for the other direction (start).
            webhook: receives translation events (start).
            live_events: send utterances as they are recognized (start).
            ai_summary: summarize in both languages when translation ends (start).
            ai_summary_prompt: prompt for that summary (start).
            speech_engine: ``deepgram`` (default) or ``google`` (start).
            speech_timeout: milliseconds (start).
            vad_silence_ms: end-of-utterance silence in milliseconds (start).
            vad_thresh: voice activity threshold (start).
            debug_level: 0-2 (start).
        """
        return self._send(
            "calling.live_translate",
            call_id,
            _params(
                action=action,
                status_url=status_url,
                from_lang=from_lang,
                to_lang=to_lang,
                direction=direction,
                from_voice=from_voice,
                to_voice=to_voice,
                filter_from=filter_from,
                filter_to=filter_to,
                webhook=webhook,
                live_events=live_events,
                ai_summary=ai_summary,
                ai_summary_prompt=ai_summary_prompt,
                speech_engine=speech_engine,
                speech_timeout=speech_timeout,
                vad_silence_ms=vad_silence_ms,
                vad_thresh=vad_thresh,
                debug_level=debug_level,
                **extra,
            ),
        )

    # -- AI agent ---------------------------------------------------------------------------------

    def ai_message(
        self,
        call_id: str,
        *,
        role: AiRole | None = None,
        message_text: str | None = None,
        reset: AiReset | None = None,
        global_data: Mapping[str, Any] | None = None,
        **extra: Any,
    ) -> R:
        """Inject a message into the call's running AI agent (``calling.ai_message``).

        Args:
            role: ``system`` (silent instruction), ``user`` (as if the caller said it) or
                ``assistant`` (as if the AI said it).
            message_text: the message.
            reset: ``{"full_reset"?, "user_prompt"?, "system_prompt"?}``.
            global_data: merged into the AI session's global data.
        """
        return self._send(
            "calling.ai_message",
            call_id,
            _params(
                role=role,
                message_text=message_text,
                reset=reset,
                global_data=global_data,
                **extra,
            ),
        )

    def ai_hold(
        self,
        call_id: str,
        *,
        timeout: str | int | None = None,
        prompt: str | None = None,
        **extra: Any,
    ) -> R:
        """Put the AI agent's caller on hold (``calling.ai_hold``).

        Args:
            timeout: hold time in seconds; the spec type is a string (``"300"``), sent as given.
            prompt: what the AI says before the hold music.
        """
        return self._send(
            "calling.ai_hold", call_id, _params(timeout=timeout, prompt=prompt, **extra)
        )

    def ai_unhold(self, call_id: str, *, prompt: str | None = None, **extra: Any) -> R:
        """Take the AI agent's caller off hold (``calling.ai_unhold``).

        Args:
            prompt: what the AI says on return.
        """
        return self._send("calling.ai_unhold", call_id, _params(prompt=prompt, **extra))

    def ai_stop(self, call_id: str, *, control_id: str | None = None, **extra: Any) -> R:
        """Stop the call's AI agent; the call stays up (``calling.ai.stop``).

        Args:
            control_id: accepted for compatibility; the server ignores it.
        """
        return self._send("calling.ai.stop", call_id, _params(control_id=control_id, **extra))

    def ai_sidecar(
        self,
        call_id: str,
        *,
        lang: str,
        prompt: str | Mapping[str, Any] | None = None,
        model: str | None = None,
        direction: Sequence[CallerSide] | None = None,
        customer_role: CallerSide | None = None,
        url: str | None = None,
        SWAIG: Mapping[str, Any] | None = None,
        permissions: SidecarPermissions | None = None,
        global_data: Mapping[str, Any] | None = None,
        hints: Sequence[str] | None = None,
        params: SidecarParams | None = None,
        action: SidecarAction | None = None,
        **extra: Any,
    ) -> R:
        """Attach a silent AI observer to the call, or get a one-off summary with ``action``
        (``calling.ai_sidecar``, an extra beyond the 37 classic commands).

        Args:
            lang: BCP-47 language of the conversation.
            prompt: instructions: a string, ``{"text"}``, ``{"pom": [...]}`` or ``{"file"}``.
            model: LLM model (default ``gpt-4o-mini``).
            direction: sides to listen to (default both).
            customer_role: which side is the customer (default ``remote-caller``).
            url: receives sidecar callbacks.
            SWAIG: tools and MCP servers available to the sidecar.
            permissions: what SWAIG tools may do.
            global_data: initial global data.
            hints: speech recognition hints.
            params: tuning (``idle_timeout_ms``, ``final_summary``, ``speech_engine``, …).
            action: ``{"summarize": {"webhook"?, "prompt"?}}`` to summarize instead of attaching.
        """
        return self._send(
            "calling.ai_sidecar",
            call_id,
            _params(
                lang=lang,
                prompt=prompt,
                model=model,
                direction=direction,
                customer_role=customer_role,
                url=url,
                SWAIG=SWAIG,
                permissions=permissions,
                global_data=global_data,
                hints=hints,
                params=params,
                action=action,
                **extra,
            ),
        )

    def ai_sidecar_poke(self, call_id: str, *, text: str, **extra: Any) -> R:
        """Give the sidecar a message and make it answer now (``calling.ai_sidecar.poke``).

        Args:
            text: the message.
        """
        return self._send("calling.ai_sidecar.poke", call_id, _params(text=text, **extra))

    def ai_sidecar_ask(self, call_id: str, *, text: str, **extra: Any) -> R:
        """Ask the sidecar a side question (``calling.ai_sidecar.ask``); the response carries an
        ``ask_id`` and the answer arrives later as an ``ask_answer`` callback with that id.

        Args:
            text: the question.
        """
        return self._send("calling.ai_sidecar.ask", call_id, _params(text=text, **extra))

    def ai_sidecar_stop(self, call_id: str, **extra: Any) -> R:
        """Detach the sidecar (``calling.ai_sidecar.stop``)."""
        return self._send("calling.ai_sidecar.stop", call_id, _params(**extra))

    def ai_sidecar_status(self, call_id: str, **extra: Any) -> R:
        """The sidecar's counters (``calling.ai_sidecar.status``).

        A ``+OK running=1 ticks=42 …`` text answer is returned as
        ``{"running": 1, "ticks": 42, …}``.
        """
        return self._send("calling.ai_sidecar.status", call_id, _params(**extra))

    # -- fax, SIP, events -------------------------------------------------------------------------

    def send_fax_stop(self, call_id: str, *, control_id: str, **extra: Any) -> R:
        """Stop a fax being sent by SWML ``send_fax`` (``calling.send_fax.stop``).

        Args:
            control_id: the fax operation (from its ``calling.call.fax`` callbacks).
        """
        return self._send("calling.send_fax.stop", call_id, _params(control_id=control_id, **extra))

    def receive_fax_stop(self, call_id: str, *, control_id: str, **extra: Any) -> R:
        """Stop a fax being received by SWML ``receive_fax`` (``calling.receive_fax.stop``).

        Args:
            control_id: the fax operation (from its ``calling.call.fax`` callbacks).
        """
        return self._send(
            "calling.receive_fax.stop", call_id, _params(control_id=control_id, **extra)
        )

    def refer(
        self,
        call_id: str,
        *,
        device: ReferDevice,
        status_url: str | None = None,
        **extra: Any,
    ) -> R:
        """Transfer a SIP call with a SIP REFER (``calling.refer``).

        Args:
            device: ``{"type": "sip", "params": {"to": "sip:…", "from"?, "username"?,
                "password"?}}`` or the short ``{"to": "sip:…"}``.
            status_url: receives refer webhooks.
        """
        return self._send(
            "calling.refer", call_id, _params(device=device, status_url=status_url, **extra)
        )

    def user_event(self, call_id: str, *, event: Mapping[str, Any], **extra: Any) -> R:
        """Fire a custom event that connected clients receive as ``user_event``
        (``calling.user_event``).

        Args:
            event: any JSON object.
        """
        return self._send("calling.user_event", call_id, _params(event=event, **extra))
