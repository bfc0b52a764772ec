"""Benchmark speech recognition and recording.

    .venv/bin/python bench/bench_asr.py            # needs flite for the speech samples

Figures:

* ASR real-time factor (decoding wall time / audio time, single thread) of
  PocketSphinxRecognizer with a 5-phrase grammar and with the open language model, with and
  without partial results (with a grammar, or before the streaming process is up, partials add
  a live pass in the feeding thread; the open model's otherwise come from the streaming
  process, providers.asr "Partial hypotheses"), on flite speech at 8 kHz; plus the
  word error rate of the open model on the same sentences, its final pass in the feeding
  thread and speculative in a decoding process (providers.asr, "Decoding processes").
* The same WER with WhisperRecognizer (faster-whisper, whisper-base int8; needs the `whisper`
  extra), its model load time, and its decode time per utterance (median and worst, for the
  sentences of 2-4 s) with 1 and 2 CPU threads.
* Recorder cost per 20 ms tick (one TickFrames: inbound + outbound) for WAV mono/stereo and MP3,
  in microseconds of CPU, i.e. how much of a media-clock tick one recording costs.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

from callplane.media.engine import TickFrames
from callplane.media.recorder import Recorder
from callplane.media.sources import FRAME_SAMPLES, SAMPLE_RATE, resample, tone
from callplane.providers.asr import PocketSphinxRecognizer, SpeechRecognizer, word_error_rate

HINTS = ["yes", "no", "sales", "support", "billing"]
SENTENCES = [
    "I would like to speak to someone about my bill",
    "please call me back tomorrow morning",
    "the weather is nice today",
    "my account number is not working",
]


def flite_frames(text: str, voice: str, workdir: Path) -> np.ndarray:
    out = workdir / "s.wav"
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(out)], check=True)
    x, rate = soundfile.read(str(out), dtype="float64")
    x8 = np.clip(np.rint(resample(x, rate, SAMPLE_RATE) * 32767), -32768, 32767)
    full = np.concatenate([np.zeros(3200), x8, np.zeros(12000)]).astype(np.int16)
    return full[: full.size // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)


def reference_samples() -> dict[tuple[str, str], np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        return {
            (voice, s): flite_frames(s, voice, Path(tmp))
            for voice in ("rms", "slt")
            for s in SENTENCES + HINTS
        }


def streamer_cpu(recognizer: PocketSphinxRecognizer) -> float:
    """CPU seconds of the recognizer's streaming process so far (0 if it has none)."""
    streamer = recognizer._streamer
    if streamer is None:
        return 0.0
    total = 0.0
    for pid in list(streamer._processes or {}):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def hint_hits(recognizer: SpeechRecognizer, samples: dict[tuple[str, str], np.ndarray]) -> int:
    """How many of the hint words, said by both voices, come back as exactly that hint."""
    hits = 0
    for voice in ("rms", "slt"):
        for word in HINTS:
            session = recognizer.open_session("en-US", HINTS, end_silence_timeout=0.8)
            events = session.feed_many(samples[(voice, word)])
            session.close()
            hits += any(e.type == "final" and e.text == word for e in events)
    return hits


def bench_asr(samples: dict[tuple[str, str], np.ndarray]) -> None:
    rec = PocketSphinxRecognizer()
    rec.warm_up()
    rec.prepare_decoding()
    print("ASR (pocketsphinx, 8 kHz -> 16 kHz, single thread)")
    for mode, hints in (("grammar", HINTS), ("open model", None)):
        for partial in (False, True):
            audio = wall = 0.0
            for frames in samples.values():
                s = rec.open_session(
                    "en-US", hints, end_silence_timeout=0.8, partial_results=partial
                )
                t0 = time.perf_counter()
                s.feed_many(frames)
                wall += time.perf_counter() - t0
                audio += frames.shape[0] / 50
                s.close()
            print(
                f"  {mode:<10} partials={'on ' if partial else 'off'}  "
                f"RTF {wall / audio:.4f}  ({audio:.1f} s audio)"
            )
    # The same final pass in the feeding thread (decode_processes=0: the whole utterance with
    # its trailing silence, at the timeout), speculative in a decoding process (the utterance
    # up to where its trailing silence began), and the streaming pass alone (the fallback
    # when the speculative pass is late, in the streaming process; see asr.py).
    in_thread = PocketSphinxRecognizer(decode_processes=0)
    batch = PocketSphinxRecognizer(final_pass="batch")
    stream = PocketSphinxRecognizer(final_pass="stream")
    for recognizer in (batch, stream):
        recognizer.prepare_decoding()
        while not (recognizer.decoding_ready() and recognizer.streaming_ready()):
            time.sleep(0.05)
    runs = (("in-thread", in_thread), ("speculative", batch), ("streaming", stream))
    for name, recognizer in runs:
        speculations = discarded = 0
        sources: list[str] = []
        audio = 0.0
        cpu0 = streamer_cpu(recognizer)
        for voice in ("rms", "slt"):
            wers = []
            for sentence in SENTENCES:
                s = recognizer.open_session("en-US", None, end_silence_timeout=0.8)
                events = s.feed_many(samples[(voice, sentence)])
                speculations += s.speculations
                discarded += s.speculations_discarded
                sources.append(s.final_source)
                audio += s.audio_seconds
                s.close()
                text = next((e.text for e in events if e.terminal and e.text), "")
                wers.append(word_error_rate(sentence, text or ""))
            print(
                f"  open model WER, flite {voice}, {name} final pass: {np.mean(wers):.1%} "
                f"(per sentence {[round(w, 3) for w in wers]})"
            )
        print(
            f"  {name}: {speculations} speculative passes, {discarded} discarded; "
            f"finals from {sorted(set(sources))}"
        )
        if name == "streaming":
            cpu = streamer_cpu(recognizer) - cpu0
            print(
                f"  streaming process CPU {cpu:.2f} s for {audio:.1f} s of utterances "
                f"({cpu / audio * 1000:.0f} ms per second of speech)"
            )
    for recognizer in (in_thread, batch, stream):
        recognizer.close()
    print(f"  grammar hint accuracy: {hint_hits(rec, samples)}/{2 * len(HINTS)}")
    rec.close()


def bench_whisper(samples: dict[tuple[str, str], np.ndarray]) -> None:
    from callplane.providers.whisper import WhisperRecognizer

    with tempfile.TemporaryDirectory() as cache:
        for threads in (1, 2):  # 1: the recognizer's default
            t0 = time.perf_counter()
            rec = WhisperRecognizer(cache_dir=Path(cache), cpu_threads=threads)
            located = time.perf_counter() - t0
            rec.warm_up()
            print(
                f"ASR (faster-whisper {rec.model_path.name}, int8, {threads} threads): "
                f"model located/joined in {located:.2f} s, loaded in {rec.load_seconds:.2f} s"
            )
            decode: list[float] = []
            cpu: list[float] = []
            wers: dict[str, list[float]] = {"rms": [], "slt": []}
            for voice in ("rms", "slt"):
                for sentence in SENTENCES:
                    s = rec.open_session("en-US", None, end_silence_timeout=0.8)
                    c0 = time.process_time()
                    events = s.feed_many(samples[(voice, sentence)])
                    cpu.append(time.process_time() - c0)
                    s.close()
                    decode.append(s.decode_seconds)
                    text = next((e.text for e in events if e.terminal and e.text), "")
                    wers[voice].append(word_error_rate(sentence, text or ""))
                    if threads == 1 and wers[voice][-1]:
                        print(f"    {voice}: {sentence!r} -> {text!r}")
            median = statistics.median(decode)
            print(
                f"  decode per utterance (2-4 s of speech): median {median:.2f} s, "
                f"worst {max(decode):.2f} s wall; CPU (all threads, with endpointing) median "
                f"{statistics.median(cpu):.2f} s"
            )
            if threads == 1:
                for voice, values in wers.items():
                    print(f"  WER, flite {voice}: {np.mean(values):.1%} (per sentence {values})")
                print(f"  hint accuracy: {hint_hits(rec, samples)}/{2 * len(HINTS)}")
            rec.close()


def bench_recorder(seconds: int = 60) -> None:
    print(f"Recorder ({seconds} s of call audio per run)")
    n = seconds * 50
    a = list(tone(500, 1.0))
    b = list(tone(1500, 1.0))
    ticks = [
        TickFrames(tick=i, inbound=a[i], outbound=b[i], speak=None, heard=True) for i in range(50)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, stereo in (("wav", False), ("wav", True), ("mp3", False), ("mp3", True)):
            path = Path(tmp) / f"r.{fmt}"
            r = Recorder(path, format=fmt, stereo=stereo, direction="both")  # type: ignore[arg-type]
            t0 = time.process_time()
            for i in range(n):
                r.feed(ticks[i % 50])
            res = r.finish()
            cpu = time.process_time() - t0
            print(
                f"  {fmt} {'stereo' if stereo else 'mono  '}  {cpu / n * 1e6:6.1f} µs/tick  "
                f"({cpu / n / 0.02:.2%} of a tick)  file {res.size / 1024:.0f} KiB "
                f"for {res.duration:.0f} s"
            )


def main() -> int:
    bench_recorder()
    if shutil.which("flite") is None:
        print("flite not installed: skipping the ASR benchmarks")
        return 0
    samples = reference_samples()
    bench_asr(samples)
    if importlib.util.find_spec("faster_whisper") is None:
        print("faster-whisper not installed (pip install 'callplane[whisper]'): no whisper figures")
    else:
        bench_whisper(samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
