"""A Hindi film through the real flow with the real packaged multilingual Whisper, and no option set.

The sample (`demo --lang hi`): three Hindi voices (festival NSK, espeak-ng hi+f3 and hi+m3), one
English line, a song and names. Whisper base on synthetic voices is weak, so the figures here
are about the path (every line reaches both tracks, the Hindi one in Devanagari, both tracks in
the film), not about translation quality; they are printed for the README.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
from pathlib import Path
from typing import Any

import jiwer
import pysubs2
import pytest
import sacrebleu

from tasks.devanagari import devanagari_share
from tasks.whisper_models import Decoded

PROJECT = Path(__file__).resolve().parents[1]


def track(job: dict, lang: str) -> pysubs2.SSAFile:
    return pysubs2.load(str(next((job["dir"] / "output").glob(f"*.{lang}.srt"))))


def text_over(subs: pysubs2.SSAFile, turn: dict, slack: float = 0.3) -> str:
    """The text of the events that overlap a line of the script."""
    start, end = (turn["start"] - slack) * 1000, (turn["end"] + slack) * 1000
    return " ".join(e.plaintext.replace("\n", " ") for e in subs if e.start < end and e.end > start)


def test_auto_took_the_packaged_multilingual_model(hindi_job: dict) -> None:
    transcript = json.loads(next(hindi_job["dir"].glob("*_asr/transcript.json")).read_text(encoding="utf-8"))
    assert transcript["language"] == "hi" and transcript["model"] == "packaged-base"
    log = next(hindi_job["dir"].glob("logs/00_orchestrator_*.log")).read_text(encoding="utf-8")
    assert "ASR__MODEL=auto took packaged-base" in log and "hf download Systran/faster-whisper-small" in log
    assert "ASR model: packaged-base (ASR__MODEL=auto took packaged-base" in hindi_job["stdout"]  # the final message
    qc = (next(hindi_job["dir"].glob("*_subtitle_gen/qc.md"))).read_text(encoding="utf-8")
    said = next(line for line in qc.splitlines() if line.startswith("Transcript segments by the language"))
    assert "hi " in said, said
    assert "Speech covered by words" in qc


def test_no_line_is_lost_in_either_track(hindi_job: dict) -> None:
    for lang in ("hi", "en"):
        subs = track(hindi_job, lang)
        lost = [t["text"] for t in hindi_job["truth"]["turns"] if not text_over(subs, t).strip()]
        print(f"{lang}: {len(subs)} events, lines lost: {len(lost)}")
        assert lost == [], lang


def test_the_hindi_track_is_devanagari(hindi_job: dict) -> None:
    """Over the events of the lines said in Hindi (the English line aside); the measured share is printed."""
    subs = track(hindi_job, "hi")
    hindi_turns = [t for t in hindi_job["truth"]["turns"] if t["language"] == "hi"]
    english = next(t for t in hindi_job["truth"]["turns"] if t["language"] == "en")
    said = " ".join(text_over(subs, t, slack=0.0) for t in hindi_turns)
    hindi_text = " ".join(
        e.plaintext for e in subs if not (e.start < english["end"] * 1000 and e.end > english["start"] * 1000)
    )
    share = devanagari_share(hindi_text)
    reference = " ".join(t["text"] for t in hindi_turns)
    cer = jiwer.cer(re.sub(r"[।,.?!]", "", reference), re.sub(r"[।,.?!]", "", said))
    print(f"Hindi track: Devanagari share {share:.3f}, character error rate {cer:.2f} (Whisper base, synthetic voices)")
    assert share >= 0.95


def test_the_english_line_is_kept_as_said(hindi_job: dict) -> None:
    """Word for word in the English track; the Hindi track's text over it and the segments' languages printed."""
    english = next(t for t in hindi_job["truth"]["turns"] if t["language"] == "en")
    normalise = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(),
                               jiwer.Strip()])  # fmt: skip
    in_english, in_hindi = (text_over(track(hindi_job, lang), english) for lang in ("en", "hi"))
    wer = jiwer.wer(normalise(english["text"]), normalise(in_english))
    transcript = json.loads(next(hindi_job["dir"].glob("*_asr/transcript.json")).read_text(encoding="utf-8"))
    languages = {s["language"] for s in transcript["segments"]}
    print(f"the English line: WER {wer:.2f} in the English track; in the Hindi track {in_hindi!r}; segment "
          f"languages {sorted(languages)}")  # fmt: skip
    assert wer <= 0.25
    assert languages <= {"hi", "en"}  # never Thai or Urdu
    translation = json.loads(next(hindi_job["dir"].glob("*_second_pass_translation/translation.json")).read_text())
    by_id = {s["id"]: s for s in transcript["segments"]}
    said = [s for s in translation["segments"] if any(by_id[i]["language"] == "en" for i in s["source_ids"])]
    assert said and all(s["text"] == " ".join(by_id[i]["text"] for i in s["source_ids"]) for s in said)  # as said


def test_the_song_region_ends_where_the_music_does(hindi_job: dict) -> None:
    songs = json.loads(next(hindi_job["dir"].glob("*_lyrics_detection/songs.json")).read_text(encoding="utf-8"))
    truth = hindi_job["truth"]["song"]
    print(f"song: truth {truth['start']:.2f}-{truth['end']:.2f}, found {songs['regions']}")
    assert len(songs["regions"]) == 1
    assert abs(songs["regions"][0]["start"] - truth["start"]) <= 1.5
    assert abs(songs["regions"][0]["end"] - truth["end"]) <= 1.5
    transcript = json.loads(next(hindi_job["dir"].glob("*_asr/transcript.json")).read_text(encoding="utf-8"))
    after = [s["id"] for s in transcript["segments"] if s["start"] >= truth["end"]]
    assert after and not set(after) & set(songs["lyric_segment_ids"])  # the dialogue after the song is not lyrics


def test_english_track_figures(hindi_job: dict) -> None:
    subs = track(hindi_job, "en")
    turns = hindi_job["truth"]["turns"]
    hypotheses = [text_over(subs, t, slack=0.0) for t in turns]
    chrf = sacrebleu.corpus_chrf(hypotheses, [[t["english"] for t in turns]]).score
    translation = json.loads(next(hindi_job["dir"].glob("*_second_pass_translation/translation.json")).read_text())
    flagged = [r for r in translation["records"] if r["action"] == "flagged"]
    redone = [r for r in translation["records"] if r["reason"].startswith("not English")]
    print(f"English track: chrF {chrf:.1f} against the sample's reference translation; {len(redone)} segments not "
          f"English decoded again, {len(flagged)} flagged")  # fmt: skip
    qc = next(hindi_job["dir"].glob("*_subtitle_gen/qc.md")).read_text(encoding="utf-8")
    assert not flagged or "What the translate pass dropped, decoded again or flagged" in qc
    assert all(h.isascii() for h in hypotheses)  # English, not Devanagari


def test_both_tracks_are_in_the_film(hindi_job: dict) -> None:
    mkv = next((hindi_job["dir"] / "output").glob("*.subtitled.mkv"))
    info = json.loads(subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(mkv)],
                                     capture_output=True, text=True, check=True).stdout)  # fmt: skip
    subs = [
        (s["tags"]["language"], s["disposition"]["default"]) for s in info["streams"] if s["codec_type"] == "subtitle"
    ]
    assert subs == [("eng", 1), ("hin", 0)]


def test_devanagari_helpers() -> None:
    from tasks.devanagari import devanagari_terms, to_devanagari
    from tasks.glossary import Entry

    assert devanagari_share("राज, ट्रेन") == 1.0 and devanagari_share("Raj") == 0.0
    assert 0.4 < devanagari_share("राज Raj") < 0.6
    assert to_devanagari("Simran") == "सिम्रन" and devanagari_share(to_devanagari("Amritsar")) == 1.0
    entries = [Entry(canonical="Raj", kind="person", variants=["Raaj", "राज"], source="test")]
    assert devanagari_terms(["Raj", "Simran"], entries) == ["राज", "सिम्रन"]  # the glossary's spelling first


def test_hindi_track_reads_at_the_hindi_speed() -> None:
    from settings.stages import SubtitleSettings
    from tasks.subtitle_gen import rules_for

    settings = SubtitleSettings()
    assert rules_for(settings, 25.0, "adult", "hi").max_cps == 22.0
    assert rules_for(settings, 25.0, "children", "hi").max_cps == 18.0
    assert rules_for(settings, 25.0, "adult", "en").max_cps == 20.0
    assert rules_for(settings, 25.0, "adult", "hi").max_line_chars == 42


def test_a_sentence_looping_over_translated_segments_is_dropped() -> None:
    from tasks.asr_guards import repeated_across
    from tasks.whisper_models import Decoded

    def seg(text: str, start: float) -> Decoded:
        return Decoded(start=start, end=start + 1, text=text, avg_logprob=-0.3, no_speech_prob=0.1,
                       compression_ratio=1.2)  # fmt: skip

    kept, dropped = repeated_across([seg("I love you.", 0), seg("Where is he?", 2), seg("I love you.", 4),
                                     seg("I love you.", 6), seg("Go home. I love you.", 8)])  # fmt: skip
    assert [s.text for s in kept] == ["I love you.", "Where is he?", "Go home. I love you."]
    assert [(r["start"], r["reason"]) for r in dropped] == [(4, "repeated_across_segments"),
                                                           (6, "repeated_across_segments")]  # fmt: skip


def test_an_english_line_glued_to_a_hindi_one_is_cut_off() -> None:
    from tasks.asr import split_at_script
    from tasks.whisper_models import Decoded

    def segment(words: list[tuple[str, float, float]]) -> Decoded:
        return Decoded(start=words[0][1], end=words[-1][2], text="".join(w for w, _, _ in words), avg_logprob=-0.3,
                       no_speech_prob=0.1, compression_ratio=1.0,
                       words=[{"word": w, "start": s, "end": e} for w, s, e in words])  # fmt: skip

    hindi = [(" चलो,", 10.3, 10.8), (" घर", 10.8, 11.2), (" चलें।", 11.2, 11.6)]
    english = [(" Simran,", 14.6, 15.0), (" I", 15.0, 15.1), (" will", 15.1, 15.3), (" come", 15.3, 15.5),
               (" back.", 15.5, 16.0)]  # fmt: skip
    glued = segment(hindi + english)
    assert [(p.start, p.end, p.text) for p in split_at_script(glued)] == [
        (10.3, 11.6, "चलो, घर चलें।"), (14.6, 16.0, "Simran, I will come back.")]  # fmt: skip
    named = segment([(" राज", 1.0, 1.3), (" Simran", 1.3, 1.6), (" घर", 1.6, 2.0), (" गई", 2.0, 2.3)])
    assert split_at_script(named) == [named]  # a name inside Hindi stays


def test_a_name_closing_a_hindi_segment_goes_with_the_english_line_it_opens() -> None:
    from tasks.asr import names_to_english_lines
    from tasks.devanagari import latin_spellings
    from tasks.whisper_models import Decoded

    def segment(words: list[tuple[str, float, float]], language: str | None = None) -> Decoded:
        return Decoded(start=words[0][1], end=words[-1][2], text="".join(w for w, _, _ in words), avg_logprob=-0.3,
                       no_speech_prob=0.1, compression_ratio=1.0, language=language,
                       words=[{"word": w, "start": s, "end": e} for w, s, e in words])  # fmt: skip

    english = segment([(" I", 15.0, 15.1), (" will", 15.1, 15.3), (" come", 15.3, 15.5), (" back.", 15.5, 16.0)], "en")
    opening = segment([(" चलो,", 10.3, 10.8), (" घर", 10.8, 11.2), (" चलें।", 11.2, 11.6), (" Simran,", 14.5, 14.9)])
    moved = names_to_english_lines([opening, english])
    assert [(s.start, s.end, s.text, s.language) for s in moved] == [
        (10.3, 11.6, "चलो, घर चलें।", None), (14.5, 16.0, "Simran, I will come back.", "en")]  # fmt: skip
    vocative = segment([(" चलो,", 10.3, 10.8), (" घर", 10.8, 11.2), (" चलें,", 11.2, 11.6), (" Simran.", 11.6, 12.0)])
    assert names_to_english_lines([vocative, english]) == [vocative, english]  # said with the Hindi: it stays
    in_devanagari = segment([(" चलो,", 10.3, 10.8), (" घर", 10.8, 11.2), (" चलें।", 11.2, 11.6), (" सिमरन,", 14.5, 14.9)])
    assert [s.text for s in names_to_english_lines([in_devanagari, english], {"सिमरन": "Simran"})] == [
        "चलो, घर चलें।", "Simran, I will come back."]  # fmt: skip
    assert names_to_english_lines([in_devanagari, english]) == [in_devanagari, english]  # not a name it knows
    assert latin_spellings(["Simran"], []) == {"सिम्रन": "Simran"}  # the transliteration when no glossary spells it
    hindi = segment([(" चलो,", 10.3, 10.8), (" घर", 10.8, 11.2), (" चलें।", 11.2, 11.6)])
    name_alone = segment([(" सिमरन,", 14.5, 14.9)])  # `split_at_script` cut it from the English words
    joined = names_to_english_lines([hindi, name_alone, english], {"सिमरन": "Simran"})
    assert [(s.text.strip(), s.start, s.language) for s in joined] == [
        ("चलो, घर चलें।", 10.3, None), ("Simran, I will come back.", 14.5, "en")]  # fmt: skip
    hindi_after = segment([(" राज", 16.5, 16.8), (" घर", 16.8, 17.0)])
    assert names_to_english_lines([opening, hindi_after]) == [opening, hindi_after]  # only before an English line


def _decoded(text: str, start: float = 1.0) -> Decoded:
    return Decoded(start=start, end=start + 2, text=text, avg_logprob=-0.3, no_speech_prob=0.1, compression_ratio=1.2)


ROMANISED = "Mokyapata hai, Mabipata geesheshon, Palit Malkarra hai hai."  # base's "translation" of Hindi speech


def test_english_words_tell_an_english_line_from_romanised_hindi() -> None:
    from tasks.asr import label_mixed_language
    from tasks.whisper_pass import english_share, name_words

    assert english_share("Simran, I will come back before the monsoon.", name_words(["Simran"])) == 1.0
    assert english_share("Raj, Rena Dasam in Atam Emni Kala Jaggi.", name_words(["Raj"])) < 0.6
    assert english_share(ROMANISED, set()) < 0.6
    english, romanised, hindi = _decoded("Simran, I will come back."), _decoded(ROMANISED, 4), _decoded("राज घर गया", 7)
    flags = label_mixed_language([english, romanised, hindi], ["en"], ["Simran"], logging.getLogger("test"))
    assert (english.language, romanised.language, hindi.language) == ("en", None, None)  # romanised stays Hindi
    assert [f["start"] for f in flags] == [1.0, 4.0]


class _Decoder:
    """Stands in for the loaded model in the bookkeeping test: `decode_alone` answers what it was given."""

    def __init__(self, answer: str) -> None:
        self.answer = answer

    unprompted = {"initial_prompt": None, "hotwords": None}

    def options(self) -> dict:
        return {"initial_prompt": "Names in this film: Simran.", "hotwords": "Simran"}

    def decode_alone(self, _audio: object, chunk: dict, _index: int, _options: dict) -> list[Decoded]:
        return [_decoded(self.answer, chunk["start"])]


FIXED = "Where is Raj? He went home."


@pytest.mark.parametrize(("again", "action", "text"), [(FIXED, "redecoded", FIXED), (ROMANISED, "flagged", ROMANISED)])
def test_a_translation_that_is_not_english_is_decoded_again_then_flagged(again: str, action: str, text: str) -> None:
    from settings.stages import WhisperDecoding
    from tasks.asr_guards import GuardSettings
    from tasks.whisper_pass import PassRequest, english_check, rechecked

    request = PassRequest(model="x", setting="X", task="translate", language="hi", decoding=WhisperDecoding(),
                          terms=["Raj"], check=english_check(["Raj"], "not English"))  # fmt: skip
    kept = [_decoded("I know my father is waiting.", 0.0), _decoded(ROMANISED, 3.0)]
    speech = [{"start": 0.0, "end": 6.0}]
    guards = GuardSettings(no_speech_threshold=0.6, log_prob_threshold=-1.0, compression_ratio_threshold=2.4)
    decoder: Any = _Decoder(again)
    out, records = rechecked(decoder, None, speech, kept, request, guards, logging.getLogger("test"))  # type: ignore[arg-type]
    assert [s.text for s in out] == ["I know my father is waiting.", text]  # nothing lost either way
    assert [(r["action"], r["reason"].split(" (")[0]) for r in records] == [(action, "not English")]
