"""asr: WhisperX with the packaged tiny.en over generated espeak dialogue with known words and turns.

The upstream files come from the real demux and silero_vad stages; speakers.json is built from
the known turns (ground-truth diarization) so the speaker check measures the ASR stage's word
attribution alone. Guards, word times, speakers, chunking and prompt budget are also tested as
plain functions.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import psutil
import pytest

from settings.model import FilmSettings
from settings.stages import AsrSettings
from tasks.asr import aligner_source, check_language, monotonic_words, speaker_of, split_at_speakers
from tasks.asr_guards import (
    GuardSettings,
    apply_guards,
    guard_compression,
    guard_no_speech,
    guard_prompt_echo,
    guard_repeats,
    guard_silence,
    guard_stock_phrase,
    repeat_spans,
    weak_evidence,
)
from tasks.contract import PermanentError, StageResult, stage_folder_name
from tasks.documents import Transcript
from tasks.kernel import RunEnv, execute
from tasks.memory import release
from tasks.whisper_models import (
    Audio,
    Decoded,
    build_prompt,
    cut_at_regions,
    needs_fallback,
    packed_windows,
    resolve_model,
    speech_chunks,
    uncovered_speech,
)
from tests.media import dialogue, make_film, speak
from tests.support import CPU, fake_result, make_job, run_stage

PACKAGED_EN = AsrSettings(model="packaged", language="en")

LINES = [
    ("A", "Good morning. Did you sleep well last night?"),
    ("B", "Not really. The neighbours were playing loud music until after midnight."),
    ("A", "That sounds terrible. Did you ask them to turn it down?"),
    ("B", "I knocked on their door twice, but nobody answered."),
    ("A", "Maybe we should write a letter to the building manager."),
    ("B", "That is a good idea. Can you help me write it this evening?"),
    ("A", "Of course. I will come over after work, around seven."),
    ("B", "Thank you. I will make some tea and we can sit in the kitchen."),
    ("A", "By the way, have you finished reading the book I gave you?"),
    ("B", "Almost. I only have two chapters left, and the ending is exciting."),
    ("A", "Do not tell me anything. I want to read it again next summer."),
    ("B", "I promise I will not say a word about the surprise."),
    ("A", "Good. Now I have to hurry, or I will miss the bus."),
    ("B", "Take an umbrella with you. The sky looks very dark today."),
    ("A", "You are right. It is going to rain all afternoon."),
    ("B", "See you tonight, and do not forget the paper for the letter."),
]

NAME_SENTENCE = "Please ask Vikramaditya to meet me at the station."
NAME_TERMS = ["Vikramaditya", "Shubhankar", "Ludhiana"]


# Text normalisation for WER: lower case, punctuation stripped, numbers as spoken ------------

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split()
)
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINAL = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}


def spoken(number: int) -> str:
    if number < 20:
        return _ONES[number]
    if number < 100:
        return _TENS[number // 10] + ("" if number % 10 == 0 else " " + _ONES[number % 10])
    if number < 1000:
        rest = number % 100
        return _ONES[number // 100] + " hundred" + ("" if rest == 0 else " " + spoken(rest))
    rest = number % 1000
    return spoken(number // 1000) + " thousand" + ("" if rest == 0 else " " + spoken(rest))


def spoken_ordinal(number: int) -> str:
    words = spoken(number).split()
    last = words[-1]
    words[-1] = _ORDINAL.get(last, (last[:-1] + "ieth") if last.endswith("y") else last + "th")
    return " ".join(words)


def normalise(text: str) -> str:
    text = text.lower().replace("’", "'")
    text = re.sub(r"(\d+)(st|nd|rd|th)\b", lambda m: " " + spoken_ordinal(int(m.group(1))) + " ", text)
    text = re.sub(r"\d+", lambda m: " " + spoken(int(m.group(0))) + " ", text.replace(",000", "000"))
    text = re.sub(r"[^\w\s']|_", " ", text).replace("'", "")
    return " ".join(text.split())


# Upstream results ---------------------------------------------------------------------------


def upstream_for(root: Path, audio: np.ndarray, turns: list, terms: list[str]) -> tuple[Any, dict[str, StageResult]]:
    """A job with the real demux and silero_vad results, ground-truth speakers.json and a glossary."""
    film = make_film(root / "film.mka", [(audio, "eng")], video=False)
    job = make_job(root, film)
    demux = run_stage("demux", job)
    vad = run_stage("silero_vad", job, upstream={"demux": demux})
    speakers = fake_result(
        job,
        "diarization",
        {
            "speakers.json": {
                "backend": "ground-truth",
                "speakers": sorted({t.speaker for t in turns}),
                "turns": [{"start": t.start, "end": t.end, "speaker": t.speaker} for t in turns],
                "names": {},
            }
        },
    )
    glossary = fake_result(
        job,
        "pre_ner",
        {
            "glossary.json": {
                "entries": [
                    {"canonical": t, "kind": "person", "variants": [], "source": "test", "notes": ""} for t in terms
                ],
                "prompt_terms": terms,
                "protected_names": terms,
            }
        },
    )
    return job, {"demux": demux, "silero_vad": vad, "diarization": speakers, "pre_ner": glossary}


def run_asr(job, upstream: dict[str, StageResult], settings: AsrSettings, progress=None) -> StageResult:
    from tasks.asr import asr

    env = RunEnv(cache_root=str(job.dir.parent / "cache"))
    return execute(asr, job, settings, CPU, upstream, FilmSettings(), env, progress=progress)


def outputs(job) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    folder = job.dir / stage_folder_name("asr")
    return (
        json.loads((folder / "transcript.json").read_text()),
        json.loads((folder / "decode_report.json").read_text())["records"],
    )


@pytest.fixture(scope="module")
def dialogue_run(tmp_path_factory):
    """One transcription of the 60 s two-voice dialogue, shared by the measurements below."""
    audio, turns = dialogue(LINES)
    job, upstream = upstream_for(tmp_path_factory.mktemp("dialogue"), audio, turns, [])
    calls: list[tuple[float, str]] = []
    started = time.monotonic()
    result = run_asr(job, upstream, PACKAGED_EN, progress=lambda f, m: calls.append((f, m)))
    seconds = time.monotonic() - started
    transcript, filtered = outputs(job)
    print(
        f"\nASR of {audio.size / 16000:.1f} s dialogue with tiny.en int8 on CPU: {seconds:.1f} s "
        f"(stage {result.duration_s:.1f} s); summary {result.summary}"
    )
    return {
        "result": result,
        "transcript": transcript,
        "filtered": filtered,
        "progress": calls,
        "duration": audio.size / 16000,
        "turns": turns,
    }


@pytest.fixture(scope="module")
def name_job(tmp_path_factory):
    """A short clip with an unusual name, with the real demux and silero_vad results."""
    audio = np.concatenate([np.zeros(8000, np.float32), speak(NAME_SENTENCE, "A"), np.zeros(8000, np.float32)])
    from tests.media import Turn

    turns = [Turn("A", NAME_SENTENCE, 0.5, round(audio.size / 16000 - 0.5, 3))]
    return upstream_for(tmp_path_factory.mktemp("name"), audio, turns, NAME_TERMS)


# The measured dialogue ---------------------------------------------------------------------


def test_dialogue_word_error_rate(dialogue_run):
    reference = normalise(" ".join(text for _, text in LINES))
    hypothesis = normalise(" ".join(s["text"] for s in dialogue_run["transcript"]["segments"]))
    wer = jiwer.wer(reference, hypothesis)
    print(f"\nWER={wer:.3f} over {len(reference.split())} words ({dialogue_run['duration']:.1f} s, tiny.en, en)")
    assert dialogue_run["duration"] >= 60
    assert wer <= 0.10


def test_dialogue_words_get_the_right_speaker(dialogue_run):
    """Reference and recognised words aligned by jiwer; each matched word's speaker against the script's."""
    ref_words, ref_speakers = [], []
    for speaker, text in LINES:
        words = normalise(text).split()
        ref_words += words
        ref_speakers += [speaker] * len(words)
    hyp_words, hyp_speakers = [], []
    for seg in dialogue_run["transcript"]["segments"]:
        for word in seg["words"]:
            tokens = normalise(word["word"]).split()
            hyp_words += tokens
            hyp_speakers += [word["speaker"]] * len(tokens)
    alignment = jiwer.process_words(" ".join(ref_words), " ".join(hyp_words))
    right = total = 0
    for chunk in alignment.alignments[0]:
        if chunk.type in ("equal", "substitute"):
            for offset in range(chunk.ref_end_idx - chunk.ref_start_idx):
                total += 1
                right += ref_speakers[chunk.ref_start_idx + offset] == hyp_speakers[chunk.hyp_start_idx + offset]
    accuracy = right / total
    print(f"\nspeaker attribution={accuracy:.3f} ({right}/{total} aligned words)")
    assert accuracy >= 0.90
    segment_right = sum(
        seg["speaker"]
        == speaker_of(
            seg["start"],
            seg["end"],
            [{"start": t.start, "end": t.end, "speaker": t.speaker} for t in dialogue_run["turns"]],
        )
        for seg in dialogue_run["transcript"]["segments"]
    )
    assert segment_right == len(dialogue_run["transcript"]["segments"])


def test_dialogue_word_times_are_monotonic_and_inside_segments(dialogue_run):
    transcript = dialogue_run["transcript"]
    assert transcript["word_timestamps"] == "whisper"  # no wav2vec2 aligner offline: the logged fallback
    previous_end = 0.0
    for seg in transcript["segments"]:
        assert seg["start"] >= previous_end - 1e-6
        assert seg["words"]
        last = seg["start"]
        for word in seg["words"]:
            assert seg["start"] <= word["start"] <= word["end"] <= seg["end"]
            assert word["start"] >= last - 1e-6
            last = word["end"]
        previous_end = seg["end"]


def test_dialogue_transcript_shape_summary_and_progress(dialogue_run):
    transcript, result = dialogue_run["transcript"], dialogue_run["result"]
    assert transcript["language"] == "en" and transcript["model"] == "packaged"
    assert [s["id"] for s in transcript["segments"]] == list(range(len(transcript["segments"])))
    Transcript.model_validate(transcript)  # the typed document the later stages read
    keys = {"id", "start", "end", "text", "speaker", "language", "avg_logprob", "no_speech_prob", "words"}
    assert all(set(s) == keys for s in transcript["segments"])
    assert all(
        set(w) == {"word", "start", "end", "speaker", "probability"} for s in transcript["segments"] for w in s["words"]
    )
    assert result.summary["filtered"] == len(dialogue_run["filtered"])
    assert all({"start", "end", "text", "reason", "action"} <= set(r) for r in dialogue_run["filtered"])
    assert result.summary["device"] == "cpu" and result.summary["compute_type"] == "int8"
    fractions = [f for f, _ in dialogue_run["progress"]]
    assert any("windows" in m for _, m in dialogue_run["progress"]) and fractions == sorted(fractions)
    assert fractions[-1] == 1.0


# Names from the glossary reach the decoder ------------------------------------------------------


def test_glossary_name_is_transcribed_only_with_the_prompt(name_job):
    job, upstream = name_job
    run_asr(job, upstream, PACKAGED_EN.model_copy(update={"use_glossary": False}))
    without = " ".join(s["text"] for s in outputs(job)[0]["segments"])
    result = run_asr(job, upstream, PACKAGED_EN)
    transcript, filtered = outputs(job)
    with_terms = " ".join(s["text"] for s in transcript["segments"])
    print(f"\nwithout glossary: {without!r}\nwith glossary:    {with_terms!r}\nfiltered: {filtered}")
    assert "vikramaditya" not in without.lower()
    assert "Vikramaditya" in with_terms
    assert result.summary["prompt_terms"] == len(NAME_TERMS) and 0 < result.summary["prompt_tokens"] <= 160
    assert not any(w in with_terms for w in ("Shubhankar", "Ludhiana"))  # no recital of the list


def test_models_are_released_after_the_stage(name_job):
    """RSS after the stage is back near its level before (the first run paid for the imports)."""
    job, upstream = name_job
    run_asr(job, upstream, PACKAGED_EN)  # warm: libraries imported, allocator pools in place
    release()  # the same trim the stage does, so both readings start from a trimmed heap
    process = psutil.Process()
    before = process.memory_info().rss
    peak = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        run_asr(job, upstream, PACKAGED_EN)
    finally:
        stop.set()
        sampler.join()
    after = process.memory_info().rss
    mib = 2**20
    print(
        f"\nRSS before {before / mib:.0f} MiB, peak {peak[0] / mib:.0f} MiB, after {after / mib:.0f} MiB "
        f"(held after: {(after - before) / mib:+.0f} MiB of {(peak[0] - before) / mib:.0f} MiB)"
    )
    assert peak[0] - before > 50 * mib  # the model was really loaded (tiny.en int8 holds about 110 MiB)
    assert after - before < 0.5 * (peak[0] - before)  # allocator noise is about 30 MiB either way


# Errors that say what to do -----------------------------------------------------------------------


def test_english_only_model_refuses_hindi(name_job):
    job, upstream = name_job
    with pytest.raises(PermanentError, match="FILM__SOURCE_LANG=en") as err:
        run_asr(job, upstream, AsrSettings(model="packaged", language="hi"))
    assert "ASR__MODEL" in str(err.value) and "English-only" in str(err.value)


def test_check_language_rules():
    assert check_language("en", False, "packaged") == "en"
    assert check_language("auto", False, "packaged") == "en"
    assert check_language("auto", True, "small") is None
    assert check_language("HI", True, "small") == "hi"
    with pytest.raises(PermanentError):
        check_language("hi", False, "packaged")


def test_missing_hub_model_names_the_fetch_command_without_network(tmp_path, network_attempts):
    attempts = network_attempts
    with pytest.raises(PermanentError) as err:
        resolve_model("small", "cpu", tmp_path, "ASR__MODEL")
    message = str(err.value)
    assert "small" in message and "ASR__MODEL" in message
    assert f"HF_HOME={tmp_path / 'huggingface'} hf download Systran/faster-whisper-small" in message
    assert attempts == []


def test_auto_takes_the_best_model_on_disk(tmp_path, network_attempts):
    """Nothing cached: the packaged multilingual base for Hindi, tiny.en for English; each says why and
    how to fetch a stronger one. A cached small wins over both."""
    hindi = resolve_model("auto", "cuda:0", tmp_path, "ASR__MODEL", "hi")
    assert hindi.spec == "packaged-base" and (hindi.path / "model.bin").is_file()
    assert hindi.path.is_relative_to(tmp_path / "models")
    assert (
        "large-v3, small not cached" in hindi.reason and "hf download Systran/faster-whisper-large-v3" in hindi.reason
    )
    again = resolve_model("packaged-base", "cpu", tmp_path, "ASR__MODEL")
    assert again.path == hindi.path  # assembled once
    english = resolve_model("auto", "cpu", tmp_path, "ASR__MODEL", "en")
    assert english.spec == "packaged" and "hf download Systran/faster-whisper-small" in english.reason
    small = tmp_path / "huggingface" / "hub" / "models--Systran--faster-whisper-small" / "snapshots" / "abc"
    small.mkdir(parents=True)
    for name in ("model.bin", "config.json", "tokenizer.json"):
        (small / name).write_text("x")
    (small.parents[1] / "refs").mkdir()
    (small.parents[1] / "refs" / "main").write_text("abc")
    chosen = resolve_model("auto", "cpu", tmp_path, "ASR__MODEL", "hi")
    assert chosen.spec == "small" and "best model on disk" in chosen.reason
    assert network_attempts == []


def test_model_settings_resolve(tmp_path):
    packaged = resolve_model("packaged", "cpu", tmp_path, "ASR__MODEL")
    assert (packaged.path / "model.bin").is_file() and packaged.spec == "packaged"
    local = resolve_model(str(packaged.path), "cpu", tmp_path, "ASR__MODEL")
    assert local.path == packaged.path.resolve()
    (tmp_path / "empty").mkdir()
    with pytest.raises(PermanentError, match="no model.bin"):
        resolve_model(str(tmp_path / "empty"), "cpu", tmp_path, "ASR__MODEL")
    with pytest.raises(PermanentError, match="does not exist"):
        resolve_model(str(tmp_path / "missing"), "cpu", tmp_path, "ASR__MODEL")
    with pytest.raises(PermanentError, match="unknown Whisper model"):
        resolve_model("gigantic", "cpu", tmp_path, "ASR__MODEL")


def punkt_present(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NLTK's English punkt_tab, as empty parameter files (a plain sentence splitter), found first."""
    import nltk

    punkt = folder / "nltk" / "tokenizers" / "punkt_tab" / "english"
    punkt.mkdir(parents=True)
    for name in ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab"):
        (punkt / name).touch()
    monkeypatch.setattr(nltk.data, "path", [str(folder / "nltk"), *nltk.data.path])


def test_aligner_not_in_cache_falls_back_without_network(tmp_path, monkeypatch):
    source, why = aligner_source("hi", None, tmp_path)
    assert source is None and ("punkt_tab" in why or "hf download theainerd/Wav2Vec2-large-xlsr-hindi" in why)
    punkt_present(tmp_path, monkeypatch)
    source, why = aligner_source("xx", None, tmp_path)
    assert source is None and "ASR__ALIGN_MODEL" in why
    source, why = aligner_source("en", None, tmp_path)
    assert source is None and "WAV2VEC2_ASR_BASE_960H is not in" in why


# Word times with a wav2vec2 aligner (a tiny random one built here) -------------------------------


def tiny_aligner(folder: Path) -> Path:
    """A randomly initialised wav2vec2 CTC model with a letter vocabulary, saved like a hub model."""
    import torch
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    folder.mkdir(parents=True)
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "'": 5}
    vocab |= {chr(c): 6 + i for i, c in enumerate(range(ord("a"), ord("z") + 1))}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), word_delimiter_token="|")
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=False
    )
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    torch.manual_seed(0)
    config = Wav2Vec2Config(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        pad_token_id=0,
    )
    Wav2Vec2ForCTC(config).save_pretrained(folder)
    return folder


def test_aligned_word_times_are_monotonic_and_inside_segments(name_job, tmp_path, monkeypatch):
    punkt_present(tmp_path, monkeypatch)
    job, upstream = name_job
    aligner = tiny_aligner(tmp_path / "aligner")
    result = run_asr(job, upstream, PACKAGED_EN.model_copy(update={"align_model": str(aligner)}))
    transcript, _ = outputs(job)
    assert result.summary["word_timestamps"] == "aligned" and transcript["word_timestamps"] == "aligned"
    for seg in transcript["segments"]:
        assert seg["words"]
        last = seg["start"]
        for word in seg["words"]:
            assert seg["start"] <= word["start"] <= word["end"] <= seg["end"] and word["start"] >= last
            last = word["end"]


# Plain functions ------------------------------------------------------------------------------------


def seg(
    text: str,
    start: float = 1.0,
    end: float = 3.0,
    words: list[str] | None = None,
    logprob: float = -0.3,
    no_speech: float = 0.1,
) -> Decoded:
    pieces = words if words is not None else [" " + w for w in text.split()]
    step = (end - start) / max(1, len(pieces))
    ws = [
        {"word": w, "start": round(start + i * step, 3), "end": round(start + (i + 1) * step, 3), "probability": 0.9}
        for i, w in enumerate(pieces)
    ]
    return Decoded(
        start=start, end=end, text=text, avg_logprob=logprob, no_speech_prob=no_speech, compression_ratio=1.0, words=ws
    )


SPEECH = [{"start": 0.9, "end": 3.2}, {"start": 10.0, "end": 12.0}]


def test_guard_silence_drops_text_over_silence_and_words_far_inside_it():
    kept, rec = guard_silence(seg("hello there", 1.0, 3.0), SPEECH)
    assert kept is not None and rec is None
    dropped, rec = guard_silence(seg("thank you", 5.0, 7.0), SPEECH)
    assert dropped is None and rec["reason"] == "silent_region" and rec["action"] == "dropped"
    long = seg("we met and then much later", 1.0, 7.0)
    changed, rec = guard_silence(long, [{"start": 0.9, "end": 4.4}])
    assert rec["action"] == "changed" and changed.text == "we met and then"
    assert changed.end <= 5.0 + 1e-6


def test_guard_no_speech_uses_whispers_rule():
    assert guard_no_speech(seg("hmm", no_speech=0.9, logprob=-1.5), 0.6, -1.0)[0] is None
    assert guard_no_speech(seg("hmm", no_speech=0.9, logprob=-0.2), 0.6, -1.0)[0] is not None
    assert guard_no_speech(seg("hmm", no_speech=0.1, logprob=-1.5), 0.6, -1.0)[0] is not None


def test_guard_repeats_collapses_three_or_more():
    assert repeat_spans("a b c b c b c d".split()) == [(1, 2, 3)]
    assert repeat_spans("no no".split()) == []
    changed, rec = guard_repeats(seg("I know, I know, I know, I know what you did."))
    assert changed.text == "I know, what you did." and rec["reason"] == "repeated_phrase"
    assert len(changed.words) == 5
    same, rec = guard_repeats(seg("I know, I know what you did."))
    assert rec is None and same.text == "I know, I know what you did."


def test_guard_compression_ratio():
    loop = "the the the the the the the the the the the the the the the the the the the the the the"
    assert guard_compression(seg(loop), 2.4)[0] is None
    assert guard_compression(seg("An ordinary sentence about the weather today."), 2.4)[0] is not None


def test_guard_prompt_echo_cuts_a_recited_hotword_list():
    terms = ["Vikramaditya", "Jhanvi", "Shubhankar", "Ludhiana", "Bhardwaj", "Chandigarh"]
    # Seen with tiny.en and hotwords: the list glued to the last real word, then looped.
    words = [
        " In",
        " sector",
        " Bhardwaj,",
        " found",
        " the",
        " money",
        " in",
        " ChandigarhVikramaditya,",
        " Jhanvi,",
        " Shubhankar,",
        " Jhanvi,",
        " Shubhankar,",
        " J",
    ]
    echo = seg("".join(words).strip(), words=words)
    changed, rec = guard_prompt_echo(echo, terms, "Vikramaditya, Jhanvi, Shubhankar, Ludhiana, Bhardwaj, Chandigarh.")
    assert rec["reason"] == "prompt_echo" and rec["action"] == "changed"
    assert changed.text == "In sector Bhardwaj, found the money in Chandigarh"
    assert [w["word"] for w in changed.words][-1] == " Chandigarh" and changed.end == echo.words[7]["end"]
    loop = seg("In fact, Jhanvi, Jhanvi, Jhanvi, Jhanvi, Jhanvi,")
    assert guard_prompt_echo(loop, terms, None)[0].text == "In fact,"
    whole = seg("Ludhiana, Bhardwaj, Chandigarh.")
    assert guard_prompt_echo(whole, terms, None)[0] is None
    prompt = "Vikramaditya, Jhanvi, Shubhankar, Ludhiana, Bhardwaj, Chandigarh."
    assert guard_prompt_echo(seg(prompt), [], prompt)[0] is None
    real = seg("Tell Jhanvi that Shubhankar is coming.")
    assert guard_prompt_echo(real, terms, None) == (real, None)
    one_name = seg("This is Shubhankar Bhardwaj.")
    assert guard_prompt_echo(one_name, terms, None)[1] is None


def test_guard_prompt_echo_cuts_a_recital_inside_the_text_where_a_name_comes_back():
    terms = ["Ishita", "Nandini", "Neha", "Sneha", "Varanasi"]
    # fresh-4108 (asr v18): "Nandini never answers the phone in the morning."
    words = [" and", " Nandini,", " Neha,", " Nandini,", " Ransas,", " the", " phone", " in", " the", " morning."]
    recital = seg("".join(words).strip(), 1.0, 4.0, words=words)
    changed, rec = guard_prompt_echo(recital, terms, None)
    assert rec is not None and rec["reason"] == "prompt_echo" and rec["action"] == "changed"
    assert changed.text == "and Nandini, the phone in the morning."
    assert (changed.start, changed.end) == (1.0, 4.0)
    assert [w["word"] for w in changed.words] == [" and", " Nandini,", " the", " phone", " in", " the", " morning."]
    # fresh-4115 (asr v20, after the name check made "Tifa." Diya): "Sameer says the view from the hills in
    # Nashik is beautiful. We should have booked the tickets last week." The recital ends its sentence.
    words = [" Sameer", " says", " Namio", " from", " Diya,", " Ninhashi,", " Kunal,", " Diya.", " We", " shouldn't",
             " work", " to", " the", " ticket."]  # fmt: skip
    changed, rec = guard_prompt_echo(seg("".join(words).strip(), 1.0, 6.0, words=words), ["Diya", "Kunal"], None)
    assert rec is not None and changed.text == "Sameer says Namio from Diya. We shouldn't work to the ticket."
    # Lists that are said: names once each, a name called twice in a row, a list at the end of the text (which
    # the trailing check judges), and fewer than three items.
    for line in ("I invited Zoya, Neha, Ishita, and Sneha to the wedding.", "Neha, Neha, wake up, we are late.",
                 "Neha, Nandini, come here.", "Ishita, you told Neha, Ishita said it first.",
                 "We met Neha, Ishita, Sneha. Then we left.", "Neha, Ishita, Neha said so."):  # fmt: skip
        said = seg(line)
        assert guard_prompt_echo(said, terms, None) == (said, None), line


def test_guard_stock_phrase_only_on_weak_evidence():
    thanks = seg("Thanks for watching!", 1.0, 2.0, logprob=-1.2)
    assert weak_evidence(thanks, SPEECH, 0.6, -1.0)
    assert guard_stock_phrase(thanks, ["thanks for watching"], True)[0] is None
    assert guard_stock_phrase(thanks, ["thanks for watching"], False)[0] is not None
    confident = seg("Please subscribe to the newsletter.", 1.0, 3.0, logprob=-0.2)
    assert not weak_evidence(confident, SPEECH, 0.6, -1.0)
    assert guard_stock_phrase(seg("Subscriber numbers fell."), ["subscribe"], True)[0] is not None


def test_apply_guards_in_order_with_records():
    cfg = GuardSettings(0.6, -1.0, 2.4, ("thanks for watching",), ("Raj", "Simran"), "Raj, Simran.")
    kept, records = apply_guards(seg("Stop, stop, stop, stop it now."), SPEECH, cfg)
    assert kept.text == "Stop, it now." and [r["reason"] for r in records] == ["repeated_phrase"]
    dropped, records = apply_guards(seg("Thanks for watching.", 10.5, 11.5, no_speech=0.4), SPEECH, cfg)
    assert dropped is None and records[-1]["reason"].startswith("stock_phrase")
    assert all({"start", "end", "text", "reason", "action"} <= set(r) for r in records)


def test_monotonic_words_fills_orders_and_clamps():
    words = [
        {"word": "a", "start": 0.5, "end": 1.2},
        {"word": "b", "start": None, "end": None},
        {"word": "c", "start": 1.1, "end": 1.6},
        {"word": "d", "start": 2.4, "end": 3.9},
    ]
    fixed = monotonic_words(words, 1.0, 3.0)
    starts = [w["start"] for w in fixed]
    assert starts == sorted(starts)
    for w, nxt in zip(fixed, fixed[1:], strict=False):
        assert w["end"] <= nxt["start"] + 1e-9
    assert all(1.0 <= w["start"] <= w["end"] <= 3.0 for w in fixed)
    assert monotonic_words([{"word": "x", "start": None, "end": None}], 2.0, 4.0)[0]["end"] <= 4.0


def test_speaker_of_takes_most_overlap_then_nearest():
    turns = [
        {"start": 0.0, "end": 2.0, "speaker": "A"},
        {"start": 2.0, "end": 5.0, "speaker": "B"},
        {"start": 6.0, "end": 7.0, "speaker": "A"},
    ]
    assert speaker_of(1.5, 3.0, turns) == "B"
    assert speaker_of(0.5, 2.2, turns) == "A"
    assert speaker_of(5.8, 5.9, turns) == "A"
    assert speaker_of(1.0, 2.0, []) is None


def test_a_retry_window_of_two_regions_is_cut_back_into_them():
    """A line before a song and the first sung line came back as one segment from one retry window (the
    dialogue was then shown as lyrics); the cut puts each word back in its own region."""
    regions = [{"start": 21.5, "end": 27.0}, {"start": 33.0, "end": 35.7}]
    joined = seg("I lend you my bicycle. Stay with me.", 21.6, 35.5)
    joined.words = [
        {"word": w, "start": s, "end": e, "probability": 0.9}
        for w, s, e in [(" I", 21.6, 21.8), (" lend", 21.8, 22.2), (" you", 22.2, 22.4), (" my", 22.4, 22.6),
                        (" bicycle.", 22.6, 26.9), (" Stay", 33.1, 33.5), (" with", 33.5, 33.8), (" me.", 33.8, 35.5)]
    ]  # fmt: skip
    first, second = cut_at_regions(joined, regions)
    assert (first.text, second.text) == ("I lend you my bicycle.", "Stay with me.")
    assert first.end <= 27.0 and second.start >= 33.0
    assert cut_at_regions(joined, regions[:1]) == [joined]


def test_split_at_speakers_makes_one_speaker_segments():
    turns = [{"start": 0.0, "end": 2.05, "speaker": "A"}, {"start": 2.05, "end": 4.0, "speaker": "B"}]
    joined = seg("Are you coming? Yes I am.", 1.0, 3.0, words=[" Are", " you", " coming?", " Yes", " I", " am."])
    first, second = split_at_speakers(joined, turns)
    assert (first.text, second.text) == ("Are you coming?", "Yes I am.")
    assert first.end <= second.start and first.start == 1.0 and second.end == 3.0
    assert split_at_speakers(joined, []) == [joined]
    aligned = seg("Stop. Wait.", 1.0, 3.0, words=["Stop.", "Wait."])
    assert [
        p.text
        for p in split_at_speakers(
            aligned, [{"start": 0.0, "end": 2.0, "speaker": "A"}, {"start": 2.0, "end": 4.0, "speaker": "B"}]
        )
    ] == ["Stop.", "Wait."]


def test_a_turn_edge_inside_a_sentence_moves_to_the_sentence_end():
    """The diarization edge falls after the first word of B's sentence (and inside A's last word): the cut
    goes to the sentence end, not between words of one sentence."""
    turns = [{"start": 0.0, "end": 1.5, "speaker": "A"}, {"start": 1.5, "end": 5.0, "speaker": "B"}]
    said = seg(
        "We are late. Simran is waiting at the station.",
        0.2,
        4.2,
        words=[" We", " are", " late.", " Simran", " is", " waiting", " at", " the", " station."],
    )
    times = [(0.2, 0.5), (0.5, 0.7), (0.7, 1.0), (1.1, 1.6), (1.6, 1.8), (1.8, 2.4), (2.4, 2.6), (2.6, 2.8), (2.8, 3.4)]
    said.words = [w | {"start": a, "end": b} for w, (a, b) in zip(said.words, times, strict=True)]
    assert [p.text for p in split_at_speakers(said, turns)] == ["We are late.", "Simran is waiting at the station."]
    late = [{"start": 0.0, "end": 1.9, "speaker": "A"}, {"start": 1.9, "end": 5.0, "speaker": "B"}]
    assert [p.text for p in split_at_speakers(said, late)] == ["We are late.", "Simran is waiting at the station."]
    paused = seg("yes come here", 0.0, 3.0, words=[" yes", " come", " here"])
    paused.words = [
        w | {"start": a, "end": b} for w, (a, b) in zip(paused.words, [(0, 0.4), (1.0, 1.4), (1.4, 2)], strict=True)
    ]
    by_pause = [{"start": 0.0, "end": 1.2, "speaker": "A"}, {"start": 1.2, "end": 3.0, "speaker": "B"}]
    assert [p.text for p in split_at_speakers(paused, by_pause)] == ["yes", "come here"]


def test_speech_chunks_merge_like_whisperx_and_split_long_regions():
    segments = [
        {"start": 0.5, "end": 5.0},
        {"start": 6.0, "end": 14.0},
        {"start": 15.0, "end": 29.0},
        {"start": 31.0, "end": 33.0},
    ]
    assert speech_chunks(segments, chunk_s=20) == [{"start": 0.5, "end": 14.0}, {"start": 15.0, "end": 33.0}]
    audio = np.random.default_rng(0).standard_normal(16000 * 70).astype(np.float32) * 0.1
    audio[16000 * 40 : 16000 * 41] = 0.0  # a quiet second inside a long region
    chunks = speech_chunks([{"start": 0.0, "end": 70.0}], Audio(samples=audio), chunk_s=30)
    assert all(c["end"] - c["start"] <= 30 for c in chunks)
    assert chunks[0]["start"] == 0.0 and chunks[-1]["end"] == 70.0
    assert any(40.0 <= c["end"] <= 41.0 for c in chunks)


def test_audio_windows_from_a_wav_match_the_samples(tmp_path):
    from tests.media import write_wav

    samples = (np.sin(np.arange(16000 * 3) / 50.0) * 0.5).astype(np.float32)
    audio = Audio(write_wav(tmp_path / "a.wav", samples))
    assert audio.duration == 3.0
    assert np.allclose(audio.window(1.0, 1.5), samples[16000:24000], atol=1e-4)
    assert audio.window(2.9, 9.0).size == 1600 and audio.window(5.0, 6.0).size == 0
    import soundfile as sf

    sf.write(tmp_path / "c.wav", samples, 8000)
    with pytest.raises(PermanentError, match="16000 Hz"):
        Audio(tmp_path / "c.wav")


def test_a_batch_reads_its_windows_and_not_the_audio_between_them():
    """Retry windows lie anywhere in a film: reading from the first to the last held up to the whole film."""

    class Counting(Audio):
        read = 0

        def window(self, start: float, end: float) -> np.ndarray:
            piece = super().window(start, end)
            Counting.read += piece.size
            return piece

    samples = (np.arange(16000 * 1800) % 9973).astype(np.float32)  # 30 minutes of a ramp
    audio = Counting(samples=samples)
    group = [{"start": 12.345, "end": 20.0}, {"start": 900.001, "end": 903.5}, {"start": 1790.2, "end": 1799.999}]
    packed, clips, offsets = packed_windows(audio, group)
    lengths = [round(c["end"] * 16000) - round(c["start"] * 16000) for c in group]
    assert packed.size == Counting.read == sum(lengths)
    for chunk, clip, offset in zip(group, clips, offsets, strict=True):
        a, b = int(clip["start"] * 16000), int(clip["end"] * 16000)  # how faster-whisper cuts a clip
        assert np.array_equal(packed[a:b], audio.window(chunk["start"], chunk["end"]))
        assert abs(a / 16000 + offset - chunk["start"]) < 1e-9  # a time in the clip maps back to the film
    assert packed_windows(audio, [])[0].size == 0


def test_uncovered_speech_finds_regions_the_decoder_left_out():
    decoded = [seg("one two three four five six", 0.5, 4.0)]
    regions = [{"start": 0.5, "end": 4.0}, {"start": 5.0, "end": 8.0}, {"start": 9.0, "end": 9.3}]
    assert uncovered_speech(regions, decoded) == [{"start": 5.0, "end": 8.0}]


def stretched() -> Decoded:
    """The 30-minute bench film at 891.5 s: Whisper wrote two of five lines said there and stretched "in"
    over the three it left out (the coverage by word times called them covered, and they were lost)."""
    said = seg("My brother works at a small hotel in Shimla.", 891.5, 911.5)
    said.words = [
        {"word": w, "start": s, "end": e, "probability": 0.9}
        for w, s, e in [(" My", 894.7, 894.8), (" brother", 894.8, 895.1), (" works", 895.1, 895.4),
                        (" at", 895.4, 895.6), (" a", 895.6, 895.8), (" small", 895.8, 896.0),
                        (" hotel", 896.0, 896.4), (" in", 896.4, 911.456), (" Shimla.", 911.456, 911.456)]
    ]  # fmt: skip
    return said


def test_speech_under_a_stretched_word_is_decoded_again():
    regions = [{"start": 894.6, "end": 900.5}, {"start": 900.7, "end": 903.5}, {"start": 903.8, "end": 906.6},
               {"start": 907.9, "end": 910.8}]  # fmt: skip
    bare = uncovered_speech(regions, [stretched()])
    assert bare == [
        {"start": 897.6, "end": 900.5},  # inside a region that has words: a stretch of 2.9 s under none
        {"start": 900.7, "end": 903.5},
        {"start": 903.8, "end": 906.6},
        {"start": 907.9, "end": 910.8},  # the stretched word holds only its last 1.2 s, 0.5 s of this one
    ]
    assert uncovered_speech(regions, [stretched()], stretches=False) == bare[1:]


def test_a_kept_segment_makes_room_for_what_was_decoded_again_inside_it():
    from tasks.whisper_pass import making_room

    again = seg("We should leave now.", 900.7, 903.4)
    first, last = making_room([stretched()], [again])
    assert first.text == "My brother works at a small hotel in" and first.end == 900.7
    assert last.text == "Shimla." and last.start >= 903.4
    assert making_room([stretched()], []) == [stretched()]


def test_a_kept_word_across_two_retried_segments_that_meet_goes():
    """The 30-minute bench film at 1502.9 s: the kept "a" (1502.856-1502.956) straddled two retried segments
    that meet; cut back from both sides it became a zero-length "a" and a subtitle event of its own."""
    from tasks.whisper_pass import making_room

    kept = seg("The doctor said that Tara needs to rest for a week.", 1500.216, 1503.22)
    times = [(1500.216, 1500.5), (1500.5, 1500.8), (1500.8, 1501.1), (1501.1, 1501.4), (1501.4, 1501.7),
             (1501.7, 1502.2), (1502.2, 1502.316), (1502.316, 1502.616), (1502.616, 1502.856),
             (1502.856, 1502.956), (1502.956, 1503.266)]  # fmt: skip
    kept = replace(kept, words=[w | {"start": a, "end": b} for w, (a, b) in zip(kept.words, times, strict=True)])
    retried = [
        seg("Your grandmother made the sweets. The doctor said that Tara needs to rest for", 1497.294, 1502.894),
        seg("a week. The teacher wants to see your father tomorrow.", 1502.894, 1508.834),
    ]
    assert making_room([kept], retried) == []  # every word is said again by the retries


def test_a_line_whisper_timed_at_the_window_end_goes_when_a_retry_says_it_where_it_was_said():
    """A fresh bench film (seed 4102): the second window's text was only "I am not angry. I am only a little
    tired.", its words of no length at 41.86 s; the line was said at 21.9 s, whose region, holding no words,
    was decoded again. Kept, the line showed twice, and as an event under 5/6 s."""
    from tasks.whisper_pass import collapsed, misplaced_copies

    late = seg("I am not angry. I am only a little tired.", 40.46, 41.86)
    late = replace(late, words=[w | {"start": 41.86, "end": 41.86} for w in late.words])
    late.words[0] |= {"start": 40.46}
    again = seg("I am not angry, I am only afraid to tell you", 21.88, 24.18)
    other = seg("Can you turn the music down and try to sleep?", 41.95, 45.12)
    assert collapsed(late) and not collapsed(again) and not collapsed(other)
    kept, records = misplaced_copies([late, other], [again], near_s=22.0)
    assert kept == [other] and [r["action"] for r in records] == ["dropped"]
    # no retry near it that says it: kept (its words may be the only copy of that line)
    assert misplaced_copies([late, other], [again], near_s=10.0)[0] == [late, other]
    elsewhere = seg("We should have booked the tickets last week.", 21.88, 24.18)
    assert misplaced_copies([late, other], [elsewhere], near_s=22.0)[0] == [late, other]
    # a line said again later, timed where it is said, is no copy
    assert misplaced_copies([seg("I am not angry, I am only a little tired.", 40.0, 42.0)], [again], 22.0)[1] == []


def test_a_retry_that_says_only_the_prompts_names_does_not_cover_its_region():
    """fresh-4107: the prompted retry wrote "Jodhpur, Jodhpur," over "Keep your voice down, the baby is asleep."."""
    from tasks.whisper_pass import names_alone

    terms = ["Nandini", "Varanasi", "Jodhpur", "Farhan Khan"]
    recital = seg("Jodhpur, Jodhpur,", 6.74, 11.4)
    line = seg("The cricket match was cancelled.", 11.4, 14.5)
    kept, records = names_alone([recital, line], terms)
    assert kept == [line] and [(r["action"], r["text"]) for r in records] == [("dropped", "Jodhpur, Jodhpur,")]
    # a name said on its own, a name in a sentence, a full name: what was said
    for said in ["Nandini!", "Nandini, come here.", "Farhan Khan.", "Khan"]:
        assert names_alone([seg(said, 1.0, 2.0)], terms)[0] != []
    assert names_alone([seg("Farhan Khan, Nandini.", 1.0, 2.0)], terms)[0] == []
    # fresh-4110: "Neha" over the 3 s of "Harsh laughed so hard that everyone turned to look."
    assert names_alone([seg("Nandini", 237.40, 240.36)], terms)[0] == []
    assert names_alone([seg("Farhan Khan.", 1.0, 2.4)], terms)[0] != []


def test_needs_fallback_follows_whisper():
    assert needs_fallback([replace(seg("x"), compression_ratio=3.0)], -1.0, 0.6, 2.4)
    assert needs_fallback([seg("x", logprob=-1.5)], -1.0, 0.6, 2.4)
    assert not needs_fallback([seg("x", logprob=-1.5, no_speech=0.9)], -1.0, 0.6, 2.4)
    assert not needs_fallback([seg("x")], -1.0, 0.6, 2.4)


def test_build_prompt_keeps_ranked_terms_within_budget():
    count = lambda text: len(text.split())  # noqa: E731 - one "token" a word
    terms = [f"Name{i}" for i in range(100)]
    prompt = build_prompt("A film.", terms, count, 60)
    assert prompt.tokens <= 60
    hot = prompt.hotwords.split(", ")
    assert hot[:2] == ["Name0", "Name1"]
    # The names left over follow as a sentence; no name stands in the prompt twice.
    assert prompt.initial_prompt.startswith(f"A film. Names in this film: Name{len(hot)}, Name{len(hot) + 1}")
    assert not set(hot) & set(prompt.initial_prompt.rstrip(".").split(": ")[1].split(", "))
    assert set(prompt.terms) == set(terms[: len(prompt.terms)])
    assert build_prompt("", [], count, 60) == build_prompt("", [], count, 60)
    assert build_prompt("", [], count, 60).initial_prompt is None
    with pytest.raises(PermanentError, match="ASR__INITIAL_PROMPT"):
        build_prompt("word " * 80, terms, count, 60)
    assert build_prompt("", terms, count, 500).tokens <= 223


def test_the_first_word_of_each_speech_region_starts_on_its_edge():
    from tasks.asr import on_speech_edges

    late = seg("Raj is here.", 1.4, 2.6)  # Whisper's first word 0.4 s after the VAD edge at 1.0
    early = seg("Go now.", 4.7, 5.6)  # into the silence before the edge at 5.0
    far = seg("Wait.", 9.5, 10.0)  # 1.5 s from its edge: not the same utterance's start, left alone
    speech = [{"start": 1.0, "end": 2.7}, {"start": 5.0, "end": 5.7}, {"start": 8.0, "end": 10.1}]
    out = on_speech_edges([late, early, far], speech)
    assert [s.start for s in out] == [1.0, 5.0, 9.5]
    assert [s.words[0]["start"] for s in out] == [1.0, 5.0, 9.5]
    assert out[0].words[1:] == late.words[1:] and out[0].end == late.end
    tight = seg("a b", 0.0, 2.0, words=[" a", " b"])  # the second region's first word follows "a" closely
    moved = on_speech_edges([tight], [{"start": 0.0, "end": 0.9}, {"start": 0.8, "end": 2.0}])[0]
    assert moved.words[1]["start"] >= moved.words[0]["end"]


def test_a_speaker_may_change_after_any_sentence_end_the_layout_knows():
    from tasks.asr import phrases

    # one rule with subtitle_layout: a closing quote or bracket after the stop, and the double danda
    words = seg("He said “go.” Then ran (fast.) फिर गया॥ अब", words=[" He", " said", " “go.”", " Then", " ran",
                " (fast.)", " फिर", " गया॥", " अब"]).words  # fmt: skip
    assert phrases(words) == [[0, 1, 2], [3, 4, 5], [6, 7], [8]]


def test_no_word_ends_in_the_silence_after_its_speech_region():
    from tasks.asr import ends_in_speech

    # "in." stretched over the pause after the first region (ends 2.5) up to the next speaker's start (3.4).
    stretched = seg("coming in. The lake", 1.0, 4.0, words=[" coming", " in.", " The", " lake"])
    for word, (start, end) in zip(stretched.words, [(1.0, 1.5), (1.5, 3.4), (3.4, 3.7), (3.7, 4.0)], strict=True):
        word["start"], word["end"] = start, end
    speech = [{"start": 0.9, "end": 2.5}, {"start": 3.4, "end": 4.1}]
    out = ends_in_speech([stretched], speech)[0]
    assert [w["end"] for w in out.words] == [1.5, 2.5, 3.7, 4.0]  # only "in." moved, to the region's edge
    assert out.end == 4.0 and out.words[2:] == stretched.words[2:]
    inside = seg("Wait here.", 5.0, 6.0)
    assert ends_in_speech([inside], [{"start": 4.9, "end": 6.2}])[0] == inside  # nothing past its edge
    outside = seg("Hm.", 7.0, 7.5)  # starts in no region: left alone
    assert ends_in_speech([outside], speech)[0] == outside


class _Retrying:
    """Stands in for the loaded model in the retry bookkeeping test: the batched try finds the first bare region's
    words, the lone try finds the second's (confidently) and the third's (unsure)."""

    chunk_s = 30.0

    def __init__(self) -> None:
        self.lone: list[float] = []

    unprompted = {"initial_prompt": None, "hotwords": None}  # what the pass gives it: retry_prompt(request)

    def options(self) -> dict:
        return {"initial_prompt": "Names in this film: Simran.", "hotwords": "Simran"}

    def decode(self, _audio, chunks, _batch_size, _on_batch=None) -> list[Decoded]:
        return [seg("The train is late.", 4.0, 5.0)] if any(c["start"] <= 4.0 < c["end"] for c in chunks) else []

    def decode_alone(self, _audio, chunk, _index, options) -> list[Decoded]:
        self.lone.append(chunk["start"])
        assert options["hotwords"] is None  # no names list on the lone try
        if chunk["start"] == 8.0:
            return [seg("Simran is waiting.", 8.0, 9.0)]
        return [seg("gone fish tree", 12.0, 13.0, logprob=-2.8)]  # under -1.0 - RETRY_FLOOR


def test_bare_speech_is_decoded_again_batched_then_alone_and_unsure_text_is_not_kept():
    from tasks.asr_guards import GuardSettings
    from tasks.whisper_pass import decode_uncovered

    speech = [{"start": 1.0, "end": 3.0}, {"start": 4.0, "end": 5.0}, {"start": 8.0, "end": 9.0},
              {"start": 12.0, "end": 13.0}]  # fmt: skip
    kept = [seg("Raj, where are you?", 1.0, 3.0)]
    guards = GuardSettings(no_speech_threshold=0.6, log_prob_threshold=-1.0, compression_ratio_threshold=2.4)
    decoder: Any = _Retrying()
    found, records = decode_uncovered(decoder, None, speech, kept, guards, 8, logging.getLogger("test"))  # type: ignore[arg-type]
    assert [s.text for s in found] == ["The train is late.", "Simran is waiting."]
    assert decoder.lone == [8.0, 12.0]  # the batched try's find is not decoded again
    by_region = {(r["start"], r["action"]) for r in records if r["reason"] == "speech without words"}
    assert by_region == {(4.0, "redecoded"), (8.0, "redecoded"), (12.0, "uncovered")}
    assert any(r["reason"].startswith("retry nonsense") and r["text"] == "gone fish tree" for r in records)


class _Recut:
    """fresh-4110: the batched retry's text for a region was a recital the guard cut back to its first words; the
    lone retry then heard the whole line."""

    chunk_s = 30.0
    unprompted = {"initial_prompt": None, "hotwords": None}

    def options(self) -> dict:
        return {"initial_prompt": "Names in this film: Neha, Pune.", "hotwords": None}

    def decode(self, _audio, _chunks, _batch_size, _on_batch=None) -> list[Decoded]:
        words = [" My", " grandfather", " grew", " up", " in"] + [" Pune,"] + [" Neha,"] * 20
        return [seg("".join(words).strip(), 230.48, 235.86, words=words)]

    def decode_alone(self, _audio, chunk, _index, _options) -> list[Decoded]:
        return [seg("My grandfather grew up in Pune, near the river.", chunk["start"], 236.2)]


def test_a_lone_retry_replaces_what_the_first_retry_said_of_its_region():
    from tasks.asr_guards import GuardSettings
    from tasks.whisper_pass import decode_uncovered

    speech = [{"start": 230.3, "end": 236.55}]
    guards = GuardSettings(no_speech_threshold=0.6, log_prob_threshold=-1.0, compression_ratio_threshold=2.4,
                           prompt_terms=("Neha", "Pune"))  # fmt: skip
    found, _records = decode_uncovered(_Recut(), None, speech, [], guards, 8, logging.getLogger("test"))  # type: ignore[arg-type]
    assert [s.text for s in found] == ["My grandfather grew up in Pune, near the river."]
    # A piece of another line that reaches into the lone retry's time stays: the retry does not say it.
    from tasks.whisper_pass import said_again

    other = seg("Nobody believed her.", 28.4, 29.8)
    assert said_again([other], [seg("So tell them the truth.", 28.38, 31.75)]) == [other]


def test_a_retry_is_prompted_without_the_names_but_with_the_script_seed():
    from settings.stages import WhisperDecoding
    from tasks.whisper_pass import PassRequest, retry_prompt

    def request(seed: str) -> PassRequest:
        return PassRequest(model="x", setting="X", task="transcribe", language="hi", decoding=WhisperDecoding(),
                           terms=["Simran", "Raj"], initial_prompt=seed)  # fmt: skip

    assert retry_prompt(request("")) == {"initial_prompt": None, "hotwords": None}
    assert retry_prompt(request("यह हिंदी है।")) == {"initial_prompt": "यह हिंदी है।", "hotwords": None}


@dataclass
class _Segment:
    """What faster-whisper yields for a segment, as far as the decoder reads it."""

    text: str
    seek: int
    avg_logprob: float
    start: float = 0.0
    end: float = 1.0
    no_speech_prob: float = 0.1
    compression_ratio: float = 1.2
    words: list = field(default_factory=list)


class _Model:
    """Stands in for faster-whisper, batched and sequential, in the decoder's fallback test. A window's samples
    hold its number. In a batch, a window in `loops` loops unless repeats are barred; one in `recites` then
    recites the names unless the names are out of the prompt; one in `bad` always fails. Sampled alone, any
    window decodes well."""

    frames_per_second = 100

    def __init__(self, loops: set[int], recites: set[int], bad: set[int]) -> None:
        self.loops, self.recites, self.bad = loops, recites, bad
        self.batches: list[tuple[list[int], int, str | None]] = []
        self.alone: list[tuple[int, list[float], str]] = []

    def text(self, n: int, repeats_barred: bool, names: bool) -> tuple[str, float]:
        if n in self.loops and not repeats_barred:
            return "No, no, no, no, no, no, no, no.", 16.0
        if n in self.recites and names:
            return "Simran, Amritsar, Imrits. I know, Raj.", 1.2
        return f"window {n}", 1.2

    def transcribe(self, audio: np.ndarray, **opts: Any) -> tuple[list[_Segment], None]:
        if "clip_timestamps" not in opts:  # decode_alone
            self.alone.append((int(audio[0]), opts["temperature"], opts["initial_prompt"]))
            return [_Segment(f"window {int(audio[0])} sampled", 0, -0.5)], None
        numbers = [int(audio[int(c["start"] * 16000)]) for c in opts["clip_timestamps"]]
        self.batches.append((numbers, opts["no_repeat_ngram_size"], opts["initial_prompt"]))
        out = []
        for n, clip in zip(numbers, opts["clip_timestamps"], strict=True):
            text, ratio = self.text(n, opts["no_repeat_ngram_size"] > 0, opts["initial_prompt"] is not None)
            out.append(_Segment(text, int(clip["start"] * self.frames_per_second), -1.5 if n in self.bad else -0.1,
                                start=clip["start"], end=clip["start"] + 1.0,  # times in the packed audio
                                compression_ratio=ratio))  # fmt: skip
        return out, None


def test_failed_windows_are_decoded_again_together_without_repeats_then_alone_with_sampling():
    from tasks.asr_guards import recites
    from tasks.whisper_models import DECODE_DEFAULTS, Audio, LoadedWhisper, WhisperDecoder

    audio = Audio(samples=np.repeat(np.arange(6, dtype=np.float32), 10 * 16000))  # six windows of 10 s
    model = _Model(loops={1, 3, 4}, recites={3}, bad={4})
    names = "Names in this film: Raj, Simran, Amritsar."
    decoder = WhisperDecoder.__new__(WhisperDecoder)  # the model stands in; nothing else differs
    decoder.__dict__ |= {"whisper": LoadedWhisper(model, DECODE_DEFAULTS | {"initial_prompt": names}),
                         "limit": 400, "batched": model, "language": "en", "task": "transcribe", "chunk_s": 20.0,
                         "unprompted": {"initial_prompt": None, "hotwords": None}, "redecoded": 0,
                         "names": [], "respellings": [], "name_checks": None,
                         "recites": lambda decoded: recites(decoded, ["Raj", "Simran", "Amritsar"])}  # fmt: skip
    out = decoder.decode(audio, [{"start": 10.0 * n, "end": 10.0 * n + 8.0} for n in range(6)], batch_size=4)
    assert model.batches == [
        ([0, 1, 2, 3], 0, names),
        ([4, 5], 0, names),
        ([1, 3, 4], 3, names),  # the failed three together, no repeats
        ([3], 3, None),  # the one that recited the names, without them
    ]
    assert model.alone == [(4, [0.2, 0.4, 0.6], names)]  # only the one that still failed is sampled
    assert [s.text for s in out] == ["window 0", "window 1", "window 2", "window 3", "window 4 sampled", "window 5"]
    assert [(s.chunk, s.start) for s in out] == [(n, 10.0 * n) for n in range(6)] and decoder.redecoded == 3


def test_a_recital_of_the_names_is_found_anywhere_in_the_text():
    from tasks.asr_guards import recites

    terms = ["Raj", "Simran", "Amritsar", "Punjab"]
    assert recites([seg("Simran, Amritsar, Imrits. I know, Raj, my father is waiting.")], terms)
    assert recites([seg("I know. Raj, Simran, Amritsar, Punjab")], terms)
    assert not recites([seg("Simran, the train leaves for Punjab in ten minutes.")], terms)
    assert not recites([seg("Simran, Raj and I will go to Amritsar.")], terms)
    assert not recites([seg("Simran, Amritsar, Imrits.")], [])


def test_a_retry_that_says_a_kept_line_again_is_dropped():
    from tasks.whisper_pass import new_speech

    kept = [seg("I told Nikhil that we would meet at the old temple.", 18.9, 22.6)]
    again = [seg("I told Nikhil that we would meet at an old temple.", 18.7, 22.9), seg("Where is it?", 24.0, 25.0)]
    found, records = new_speech(again, kept)
    assert [s.text for s in found] == ["Where is it?"]
    assert [(r["start"], r["reason"]) for r in records] == [(18.7, "retry repeats a kept segment")]


def test_a_retry_that_holds_a_lost_line_and_a_kept_one_keeps_the_lost_line():
    """The 30-minute bench film: Whisper stretched "told" over the line before it; the retry window held
    both lines, and the whole retried segment was dropped as a repeat (a line lost)."""
    from dataclasses import replace

    from tasks.whisper_pass import making_room, new_speech

    kept = seg("I told lawyer that we would meet at the old temple.", 768.96, 773.5)
    words = [{"word": " I", "start": 768.96, "end": 768.96}, {"word": " told", "start": 768.96, "end": 771.2}]
    rest = seg("lawyer that we would meet at the old temple.", 771.2, 773.5).words
    kept = replace(kept, words=words + rest)
    lost = "Arjun, tell Zoya the truth before it is too late."
    again = seg(f"{lost} I told Zoya that we would meet at the old temple.", 767.06, 773.7)
    again = replace(
        again,
        words=seg(lost, 767.06, 770.6).words
        + seg("I told Zoya that we would meet at the old temple.", 770.7, 773.7).words,
    )
    found, records = new_speech([again], [kept])
    assert [s.text for s in found] == [lost]
    assert [r["action"] for r in records] == ["changed"] and lost in records[0]["reason"]
    (after,) = making_room([kept], found)  # the zero-length "I" inside the recovered line goes
    assert after.text == "told lawyer that we would meet at the old temple." and after.start >= found[0].end


def test_the_prompts_own_sentences_said_again_are_dropped():
    from tasks.asr_guards import guard_prompt_echo

    seed = "नमस्ते, आप कैसे हैं? मैं ठीक हूँ। Names in this film: राज, सिम्रन."
    echo = seg("आपकूँ। आप कैसे हैं? आप कैसे हैं?", 40.8, 43.3)
    assert guard_prompt_echo(echo, [], seed)[0] is None
    line = seg("राज, ट्रेन दस मिनट में निकल जाएगी। आप कैसे हैं?", 1.0, 4.0)  # a real line that happens to end so
    assert guard_prompt_echo(line, [], seed)[0] is line


def test_a_window_gets_a_token_budget_that_stops_a_loop_early():
    from tasks.whisper_models import token_limit, tokens_per_second, with_token_budget

    hindi, english = tokens_per_second("hi", "transcribe"), tokens_per_second("en", "transcribe")
    assert tokens_per_second("hi", "translate") == english < hindi
    limit = token_limit(60)
    assert limit == 448 - 6 - 60
    assert with_token_budget({"beam_size": 5}, 3.0, hindi, limit) == {"beam_size": 5, "max_new_tokens": 91}
    assert with_token_budget({}, 20.0, english, limit) == {"max_new_tokens": 216}  # a 20 s English window
    assert with_token_budget({}, 20.0, hindi, limit) == {}  # Devanagari: Whisper's own limit after the prompt
    assert with_token_budget({"max_new_tokens": 40}, 3.0, hindi, limit) == {"max_new_tokens": 40}


@pytest.mark.parametrize("packed", [False, True])
def test_punkt_is_found_where_nltk_finds_it_without_importing_nltk(tmp_path: Path, packed: bool) -> None:
    import subprocess
    import sys
    import zipfile

    data = tmp_path / "data"
    english = data / "tokenizers" / "punkt_tab" / "english"
    english.mkdir(parents=True)
    (english / "collocations.tab").touch()
    if packed:
        with zipfile.ZipFile(data / "tokenizers" / "punkt_tab.zip", "w") as bundle:
            bundle.write(english / "collocations.tab", "punkt_tab/english/collocations.tab")
        import shutil

        shutil.rmtree(data / "tokenizers" / "punkt_tab")
    check = (
        "import sys; from tasks.asr import punkt_installed; "
        "found = [punkt_installed(l) for l in ('english', 'german')]; imported = 'nltk' in sys.modules; "
        "import nltk\n"
        "def nltk_finds(l):\n"
        "    try: nltk.data.find(f'tokenizers/punkt_tab/{l}/'); return True\n"
        "    except LookupError: return False\n"
        "print(found, imported, [nltk_finds(l) for l in ('english', 'german')])"
    )
    env = {**os.environ, "NLTK_DATA": str(data), "HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split("\n")[0] == "[True, False] False [True, False]", out.stdout + out.stderr
