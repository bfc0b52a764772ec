"""`callplane serve --asr whisper` end to end: a speech `calling.collect` recognised by
faster-whisper from the far end's PCMU (flite `rms`, a bench sentence), and a language
pocketsphinx has no model for accepted. Needs the `whisper` extra: it does not skip."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from farend import FarEnd
from harness import Receiver, Server, until

from callplane import AsyncRestClient
from callplane.providers.asr import word_error_rate
from callplane.providers.tts import FliteTts

COLLECT = "calling.call.collect"
SENTENCE = "please call me back tomorrow morning"


async def test_speech_collect_with_whisper(
    make_server: Callable[..., Server], receiver: Receiver, far_end: FarEnd
) -> None:
    server = make_server(extra_args=["--asr", "whisper"])
    sentence = await FliteTts().synthesize(SENTENCE)
    document = {"version": "1.0.0", "sections": {"main": [{"sleep": -1}]}}

    def results() -> list[dict[str, Any]]:
        return [e["params"]["result"] for e in receiver.events("/speech", COLLECT)]

    async with AsyncRestClient(server.project, server.token, server.host) as client:
        leg = await client.calling.dial(from_="+15559876543", to=far_end.uri, swml=document)
        call_id = leg["id"]
        await asyncio.wait_for(far_end.answered.wait(), 10)
        await until(lambda: server.call_status(call_id) == "answered", 5, "answered")
        await client.calling.collect(
            call_id,
            control_id="ask",
            speech={"end_silence_timeout": 0.8},
            start_input_timers=True,
            initial_timeout=5,
            send_start_of_input=True,
            status_url=receiver.url("/speech"),
        )
        await far_end.silence(0.5)
        await far_end.play(sentence)
        await far_end.silence(1.2)
        await until(lambda: len(results()) >= 2, 15, f"the speech result (saw {results()})")
        start, speech = results()
        assert start["type"] == "start_of_input"
        assert speech["type"] == "speech", speech
        wer = word_error_rate(SENTENCE, speech["params"]["text"])
        assert wer <= 0.2, (wer, speech)
        assert 0.5 <= speech["params"]["confidence"] <= 1.0
        # whisper-base is multilingual: French is collected (pocketsphinx answers 501).
        await client.calling.collect(call_id, control_id="fr", speech={"language": "fr-FR"})
        await client.calling.collect_stop(call_id, control_id="fr")
        await client.calling.end(call_id)
    assert "whisper model" in server.log() and "loaded" in server.log()
