"""Which script variables each call-facing SWML method sets: the `SwmlHost.run_method` contract.

`SwmlHost.run_method(name, params)` returns a dict of variables; the interpreter merges it into
``vars``. The names below come from the SWML reference (shared/reference/swml.md §2, from the
schema and the method pages); the engine should return those that apply and may omit the rest.
Values are strings unless noted. Methods absent from the table set nothing documented; return
``{}`` (or None).

``return_value`` is also set by ``connect``, ``join_conference`` and ``sip_refer`` (the docs do not
say to what; mirroring the ``*_result`` value is the natural choice). ``connect`` and
``join_conference`` never receive their ``result`` parameter: the interpreter runs it after the
host returns, switching on ``connect_result`` / ``join_conference_result``.
"""

from __future__ import annotations

from typing import Final

__all__ = ["METHOD_VARIABLES"]

METHOD_VARIABLES: Final[dict[str, tuple[str, ...]]] = {
    # prompt_result: failed | no_input | match_speech | match_digits | no_match
    "prompt": (
        "prompt_result",
        "prompt_value",
        "prompt_digit_terminator",
        "prompt_speech_confidence",
    ),
    "record": ("record_url", "record_result"),
    "record_call": ("record_call_url", "record_call_result", "record_control_id"),
    "stop_record_call": ("stop_record_call_result",),
    "send_digits": ("send_digits_result",),
    # denoise_result: on | failed (denoise), off (stop_denoise)
    "denoise": ("denoise_result",),
    "stop_denoise": ("denoise_result",),
    # detect_result: machine | human | fax | unknown | detecting | error
    "detect_machine": ("detect_result", "detect_machine_beep", "detect_ms"),
    "tap": (
        "tap_uri",
        "tap_result",
        "tap_control_id",
        "tap_rtp_src_addr",
        "tap_rtp_src_port",
        "tap_ptime",
        "tap_codec",
        "tap_rate",
    ),
    "stop_tap": ("stop_tap_result",),
    "stream": ("stream_result", "stream_control_id"),
    "stop_stream": ("stop_stream_result",),
    "transcribe": ("transcribe_result", "transcribe_control_id"),
    "transcribe_stop": ("transcribe_stop_result",),
    "sip_refer": (
        "sip_refer_to",
        "sip_refer_result",
        "return_value",
        "sip_refer_response_code",
        "sip_refer_to_response_code",
    ),
    "send_fax": (
        "send_fax_document",
        "send_fax_identity",
        "send_fax_remote_identity",
        "send_fax_pages",
        "send_fax_result_code",
        "send_fax_result_text",
        "send_fax_result",
    ),
    "receive_fax": (
        "receive_fax_document",
        "receive_fax_identity",
        "receive_fax_remote_identity",
        "receive_fax_pages",
        "receive_fax_result_code",
        "receive_fax_result_text",
        "receive_fax_result",
    ),
    # connect_result: connected | failed
    "connect": ("connect_result", "connect_failed_reason", "return_value"),
    # join_conference_result: completed | answered | no-answer | failed | canceled
    "join_conference": ("join_conference_result", "return_value"),
    # join_room_result: joined | failed
    "join_room": ("join_room_result",),
}
