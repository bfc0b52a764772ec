"""expect_said's matching, without sockets: phonetic alignment and match by example."""

from __future__ import annotations

import asyncio
import shutil

import numpy as np
import pytest

from callplane.media.g711 import ulaw_decode, ulaw_encode
from callplane.providers.asr import PocketSphinxRecognizer
from callplane.providers.tts import DefaultTts
from callplane.testing.match import (
    DEFAULT_THRESHOLD,
    TEMPLATE_MAX_MEAN,
    TEMPLATE_MAX_WORST,
    Match,
    best_window_distance,
    features,
    match,
    subsequence_distance,
    to_phones,
)

requires_flite = pytest.mark.skipif(shutil.which("flite") is None, reason="needs flite")


@pytest.fixture(scope="module")
def recognizer() -> PocketSphinxRecognizer:
    return PocketSphinxRecognizer()


def test_best_window_distance_ignores_what_surrounds_the_phrase() -> None:
    assert best_window_distance(list("abc"), list("xxabcyy")) == 0
    assert best_window_distance(list("abc"), list("xxabyy")) == 1
    assert best_window_distance(list("abc"), []) == 3


def test_pronounce_uses_the_models_dictionary(recognizer: PocketSphinxRecognizer) -> None:
    assert recognizer.pronounce("sales") == ["S", "EY", "L", "Z"]
    assert recognizer.pronounce("Sales") == ["S", "EY", "L", "Z"]
    assert recognizer.pronounce("qwzxv") is None
    # Unknown words fall back to their letters; digits are spoken.
    assert to_phones("qz 1", recognizer.pronounce) == ["q", "z", "W", "AH", "N"]


def test_a_phrase_inside_a_longer_prompt_matches(recognizer: PocketSphinxRecognizer) -> None:
    found = match(
        "press one for sales",
        "welcome press one for sales to for support",
        phonetize=recognizer.pronounce,
    )
    assert found.score == 1.0 and found.ok


def test_recognition_errors_that_sound_right_still_match(
    recognizer: PocketSphinxRecognizer,
) -> None:
    found = match(
        "connecting you to sales",
        "connecting you to say also",
        phonetize=recognizer.pronounce,
    )
    assert found.ok, found


def test_a_different_option_does_not_match(recognizer: PocketSphinxRecognizer) -> None:
    found = match(
        "press one for sales",
        "press one for billing to for support",
        phonetize=recognizer.pronounce,
    )
    assert not found.ok
    assert found.score < DEFAULT_THRESHOLD


def test_nothing_to_expect_is_an_error() -> None:
    with pytest.raises(ValueError, match="nothing to expect"):
        match("?!", "anything")


def _speak(text: str, voice: str) -> np.ndarray:
    audio = asyncio.run(DefaultTts().synthesize(text, voice=voice))
    return ulaw_decode(ulaw_encode(np.asarray(audio, dtype=np.int16)).tobytes())


@requires_flite
@pytest.mark.parametrize("voice", ["slt", "rms"])
def test_match_by_example_finds_the_phrase_in_a_longer_prompt(voice: str) -> None:
    prompt = _speak("Welcome. Press one for sales, two for support.", voice)
    heard = features(np.concatenate([np.zeros(4000), prompt, np.zeros(4000)]))
    template = features(_speak("press one for sales", voice), trim=True)
    mean, worst, end = subsequence_distance(template, heard)
    assert mean <= TEMPLATE_MAX_MEAN and worst <= TEMPLATE_MAX_WORST
    # It ends inside the prompt, before "two for support".
    assert 4000 // 80 < end < (4000 + prompt.size) // 80 - 40
    for other in ("our offices are closed", "press nine to repeat this menu"):
        wrong, _, _ = subsequence_distance(features(_speak(other, voice), trim=True), heard)
        assert wrong > TEMPLATE_MAX_MEAN
    # Too little audio to hold the phrase: no match at all.
    assert subsequence_distance(template, heard[:10])[0] == float("inf")


def test_match_describes_both_ways() -> None:
    found = Match("sales", "tails", 0.5, 0.85, distance=12.0, worst=15.0, voice="slt")
    assert found.by_example and not found.by_speech and found.ok
    assert "by example (slt) distance 12.0" in found.describe()
    assert not Match("sales", "", 0.0, 0.85).ok
