"""second_pass_translation: passthrough, Whisper translate pass bookkeeping, and the NMT path with a tiny model.

The NMT model is a MarianMT of one layer with a word-level tokenizer, built and trained here
in about a second to memorise a handful of Hindi -> English pairs (placeholders and window
separators included), saved to a folder and loaded through the stage's own loading function.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rapidfuzz import fuzz

from settings.model import FilmSettings
from settings.stages import TranslationSettings
from tasks.contract import PermanentError, StageResult, stage_folder_name
from tasks.kernel import RunEnv, execute
from tasks.second_pass_translation import (
    SEPARATOR,
    Seq2Seq,
    covered_ids,
    language_setup,
    load_seq2seq,
    name_table,
    nmt_translate_texts,
    protect,
    restore,
    split_window,
    windows,
)
from tests.media import dialogue
from tests.support import CPU, fake_result
from tests.test_asr import PACKAGED_EN, outputs, run_asr, upstream_for

LINES = [
    ("A", "Raj, the train leaves in ten minutes."),
    ("B", "Then we should run to the station now."),
    ("A", "Simran is already waiting on the platform."),
]
TERMS = ["Raj", "Simran"]

# Segments of a Hindi transcript and the "translations" the tiny model learns.
HINDI = [("राज कहाँ है", "A"), ("सिमरन घर गई", "B"), ("मुझे नहीं पता", "A")]
ENGLISH = {"[1] कहाँ है": "where is [1]", "[2] घर गई": "[2] went home", "मुझे नहीं पता": "I do not know"}
GLOSSARY = {
    "entries": [
        {"canonical": "Raj", "kind": "person", "variants": ["राज"], "source": "test", "notes": ""},
        {"canonical": "Simran", "kind": "person", "variants": ["सिमरन"], "source": "test", "notes": ""},
    ],
    "prompt_terms": ["Raj", "Simran"],
    "protected_names": ["Raj", "Simran"],
}


def run_translation(job, upstream: dict[str, StageResult], settings: TranslationSettings) -> StageResult:
    from tasks.second_pass_translation import second_pass_translation

    env = RunEnv(cache_root=str(job.dir.parent / "cache"))
    return execute(second_pass_translation, job, settings, CPU, upstream, FilmSettings(), env)


def translation(job) -> dict[str, Any]:
    return json.loads((job.dir / stage_folder_name("second_pass_translation") / "translation.json").read_text())


@pytest.fixture(scope="module")
def spoken(tmp_path_factory):
    """A short two-voice dialogue through the real demux, silero_vad and asr (tiny.en) stages."""
    audio, turns = dialogue(LINES)
    job, upstream = upstream_for(tmp_path_factory.mktemp("spoken"), audio, turns, TERMS)
    asr = run_asr(job, upstream, PACKAGED_EN)
    transcript, _ = outputs(job)
    return (
        job,
        {"demux": upstream["demux"], "silero_vad": upstream["silero_vad"], "asr": asr, "pre_ner": upstream["pre_ner"]},
        transcript,
    )


def as_hindi(
    job, upstream: dict[str, StageResult], transcript: dict[str, Any], english: frozenset[int] = frozenset()
) -> dict[str, StageResult]:
    """The same transcript said to be Hindi (so it is not passed through), but for the segments in `english`,
    labelled as said in English the way the asr stage labels the Latin lines of a Hinglish film."""
    segments = [s | {"language": "en" if s["id"] in english else "hi"} for s in transcript["segments"]]
    hindi = transcript | {"language": "hi", "segments": segments}
    return upstream | {"asr": fake_result(job, "asr", {"transcript.json": hindi})}


# Passthrough and none ------------------------------------------------------------------------------


def test_english_transcript_passes_through(spoken):
    job, upstream, transcript = spoken
    result = run_translation(job, upstream, TranslationSettings())
    out = translation(job)
    assert out["passthrough"] is True and result.summary["passthrough"] is True
    assert out["source_language"] == "en" and out["target_language"] == "en"
    assert [s["text"] for s in out["segments"]] == [s["text"] for s in transcript["segments"]]
    assert [s["source_ids"] for s in out["segments"]] == [[s["id"]] for s in transcript["segments"]]
    assert out["segments"][0]["words"] == transcript["segments"][0]["words"]


def test_english_passthrough_does_not_wait_for_a_cpu_slot(spoken):
    """Passing an English transcript through is no work: it does not queue behind a heavy stage."""
    import logging
    import threading

    from tasks.kernel import cpu_slot

    job, upstream, _ = spoken

    class Busy:
        log = logging.getLogger("test")

        def progress(self, fraction: float, message: str) -> None:
            pass

    done = threading.Event()
    worker = threading.Thread(target=lambda: (run_translation(job, upstream, TranslationSettings()), done.set()))
    with cpu_slot(1, Busy()):  # type: ignore[arg-type]  # a heavy stage holds the machine's one slot
        worker.start()
        finished = done.wait(60)
    worker.join()
    assert finished and translation(job)["passthrough"] is True


def test_backend_none_writes_no_english(spoken):
    job, upstream, transcript = spoken
    run_translation(job, as_hindi(job, upstream, transcript), TranslationSettings(backend="none"))
    out = translation(job)
    assert out == {
        "backend": "none",
        "source_language": "hi",
        "target_language": "en",
        "passthrough": False,
        "segments": [],
        "records": [],
    }


# Whisper translate pass ------------------------------------------------------------------------------


def test_whisper_pass_refuses_an_english_only_model(spoken):
    job, upstream, transcript = spoken
    with pytest.raises(PermanentError, match="SECOND_PASS_TRANSLATION__WHISPER_MODEL"):
        run_translation(job, as_hindi(job, upstream, transcript), TranslationSettings(backend="whisper"))


def test_whisper_pass_maps_english_segments_to_the_transcript(spoken, monkeypatch):
    """The whole Whisper path on tiny.en: with only an English model offline, its 'translation' of English
    speech is a transcription, which is enough to check windows, guards, source_ids and speakers."""
    import tasks.second_pass_translation as spt

    monkeypatch.setattr(spt, "is_multilingual", lambda _pipeline: True)
    job, upstream, transcript = spoken
    result = run_translation(job, as_hindi(job, upstream, transcript), TranslationSettings(backend="whisper"))
    out = translation(job)
    by_id = {s["id"]: s for s in transcript["segments"]}
    assert out["backend"] == "whisper" and out["passthrough"] is False and result.summary["model"] == "packaged"
    assert out["segments"] and all(s["words"] == [] for s in out["segments"])
    covered = sorted(i for s in out["segments"] for i in s["source_ids"])
    assert covered == sorted(by_id)
    for seg in out["segments"]:
        sources = [by_id[i] for i in seg["source_ids"]]
        assert seg["speaker"] in {s["speaker"] for s in sources}
        assert fuzz.ratio(seg["text"].lower(), " ".join(s["text"] for s in sources).lower()) > 80
    print(f"\nwhisper pass: {[(s['source_ids'], s['speaker'], s['text']) for s in out['segments']]}")


def test_a_line_said_in_english_passes_through_and_is_not_translated_again(spoken, monkeypatch):
    """Hinglish: the segment labelled English goes into the English track exactly as said; the translate pass
    decodes only the speech outside it."""
    import tasks.second_pass_translation as spt

    decoded_speech: list[list[dict[str, Any]]] = []
    original = spt.whisper_pass

    def recording(request, audio, speech, *args):
        decoded_speech.append(speech)
        return original(request, audio, speech, *args)

    monkeypatch.setattr(spt, "is_multilingual", lambda _pipeline: True)
    monkeypatch.setattr(spt, "whisper_pass", recording)
    job, upstream, transcript = spoken
    said = transcript["segments"][1]
    result = run_translation(
        job, as_hindi(job, upstream, transcript, frozenset({said["id"]})), TranslationSettings(backend="whisper")
    )
    out = translation(job)
    as_said = [s for s in out["segments"] if s["source_ids"] == [said["id"]]]
    assert len(as_said) == 1 and as_said[0]["text"] == said["text"] and as_said[0]["words"] == said["words"]
    assert result.summary["said_in_english"] == 1
    assert all(said["id"] not in s["source_ids"] for s in out["segments"] if s is not as_said[0])
    assert [s["id"] for s in out["segments"]] == list(range(len(out["segments"])))
    assert [s["start"] for s in out["segments"]] == sorted(s["start"] for s in out["segments"])
    for region in decoded_speech[0]:
        assert region["end"] <= said["start"] or region["start"] >= said["end"], region


# NMT -------------------------------------------------------------------------------------------------


def training_pairs(context: int) -> list[tuple[str, str]]:
    """The inputs the stage will make (windows and single segments, names as placeholders) and their targets."""
    masked = []
    counter = 1
    for text, _ in HINDI:
        out, mapping = protect(text, name_table(GLOSSARY), counter)
        counter += len(mapping)
        masked.append(out)
    pairs = [(m, ENGLISH[m]) for m in masked]
    for span, _ in windows(masked, context):
        pairs.append((SEPARATOR.join(masked[j] for j in span), SEPARATOR.join(ENGLISH[masked[j]] for j in span)))
    return pairs


def tiny_marian(folder: Path, pairs: list[tuple[str, str]], steps: int) -> Path:
    """A one-layer MarianMT with a word-level tokenizer, trained `steps` steps on `pairs`, saved to folder."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import MarianConfig, MarianMTModel, PreTrainedTokenizerFast

    split = pre_tokenizers.Whitespace()
    words = sorted({w for s, t in pairs for w, _ in split.pre_tokenize_str(f"{s} {t}")} | {"राज", "सिमरन"})
    vocab = {token: i for i, token in enumerate(["<pad>", "</s>", "<unk>", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = split
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_input_names=["input_ids", "attention_mask"],
    )
    torch.manual_seed(0)
    config = MarianConfig(
        vocab_size=len(vocab),
        d_model=64,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        forced_eos_token_id=1,
        max_position_embeddings=64,
    )
    model = MarianMTModel(config)
    if steps:
        source = tokenizer([s for s, _ in pairs], return_tensors="pt", padding=True)
        labels = tokenizer([t for _, t in pairs], return_tensors="pt", padding=True)["input_ids"]
        labels[labels == 0] = -100
        optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
        model.train()
        for _ in range(steps):
            loss = model(**source, labels=labels).loss
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if loss.item() < 0.005:
                break
    model.eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_nmt(tmp_path_factory) -> Path:
    return tiny_marian(tmp_path_factory.mktemp("nmt") / "model", training_pairs(1), steps=400)


def hindi_upstream(job, english: tuple[float, str] | None = None) -> dict[str, StageResult]:
    """A Hindi transcript of the HINDI lines, and a line said in English at `english` (start, text) if given."""
    segments = [
        {
            "id": i,
            "start": 1.0 + 3 * i,
            "end": 3.5 + 3 * i,
            "text": text,
            "speaker": speaker,
            "avg_logprob": -0.2,
            "no_speech_prob": 0.05,
            "words": [],
        }
        for i, (text, speaker) in enumerate(HINDI)
    ]
    if english is not None:
        start, text = english
        segments.append(
            segments[0] | {"id": len(segments), "start": start, "end": start + 1.0, "text": text, "language": "en"}
        )
        segments.sort(key=lambda s: s["start"])
        segments = [s | {"id": i} for i, s in enumerate(segments)]
    transcript = {
        "language": "hi",
        "language_probability": 0.97,
        "model": "large-v3",
        "word_timestamps": "whisper",
        "segments": segments,
    }
    empty = {name: StageResult(stage=name, version="test", job_id=job.job_id) for name in ("demux", "silero_vad")}
    return empty | {
        "asr": fake_result(job, "asr", {"transcript.json": transcript}),
        "pre_ner": fake_result(job, "pre_ner", {"glossary.json": GLOSSARY}),
    }


def test_nmt_translates_in_context_batches_and_restores_names(tmp_path, tiny_nmt, monkeypatch):
    from transformers import MarianMTModel

    from tests.support import make_job

    seen: list[list[str]] = []
    original = MarianMTModel.generate

    def recording(self, *args, **kwargs):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tiny_nmt)
        seen.append(tokenizer.batch_decode(kwargs["input_ids"], skip_special_tokens=True))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MarianMTModel, "generate", recording)
    job = make_job(tmp_path)
    upstream = hindi_upstream(job)
    settings = TranslationSettings(backend="nmt", nmt_model=str(tiny_nmt), batch_size=2, context_segments=1)
    result = run_translation(job, upstream, settings)
    out = translation(job)
    texts = [s["text"] for s in out["segments"]]
    print(f"\nNMT (tiny model): {texts}; summary {result.summary}; batches {[len(b) for b in seen]}")
    assert texts == ["where is Raj", "Simran went home", "I do not know"]
    assert [len(b) for b in seen] == [2, 1]  # three context windows, two at a time; none needed alone
    assert all("राज" not in text and "सिमरन" not in text for batch in seen for text in batch)
    assert result.summary["context_windows"] == 3 and result.summary["names_protected"] == 2
    assert result.summary["names_lost"] == 0 and result.summary["alone"] == 0
    transcript = json.loads((job.dir / stage_folder_name("asr") / "transcript.json").read_text())
    for eng, src in zip(out["segments"], transcript["segments"], strict=True):
        assert (eng["id"], eng["start"], eng["end"], eng["speaker"]) == (
            src["id"],
            src["start"],
            src["end"],
            src["speaker"],
        )
        assert eng["source_ids"] == [src["id"]] and eng["words"] == []
    assert out["backend"] == "nmt" and out["source_language"] == "hi" and out["passthrough"] is False


class _Echo:
    """A stand-in seq2seq model that copies its input but drops separators and one placeholder, as a model
    that does not keep them would: to check the fallbacks' bookkeeping deterministically."""

    def __init__(self, tokenizer: Any, drop: list[str]) -> None:
        self.drop = {tokenizer.convert_tokens_to_ids(t) for t in drop}

    def generate(self, input_ids, attention_mask=None, **_kwargs):
        import torch

        rows = [[t for t in row.tolist() if t not in self.drop] for row in input_ids]
        width = max(len(r) for r in rows)
        return torch.tensor([r + [0] * (width - len(r)) for r in rows])


def test_nmt_fallbacks_when_the_model_drops_separators_or_placeholders(tiny_nmt):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_nmt)
    nmt = Seq2Seq(tokenizer=tokenizer, model=_Echo(tokenizer, ["|", "2"]), family="plain", device="cpu")
    texts, stats = nmt_translate_texts(
        nmt,
        [t for t, _ in HINDI],
        "hi",
        name_table(GLOSSARY),
        TranslationSettings(backend="nmt", batch_size=2, context_segments=1),
    )
    assert stats == {"context_windows": 0, "alone": 3, "names_protected": 2, "names_lost": 1}
    assert texts[0] == "Raj कहाँ है"  # placeholder kept: restored to the canonical name
    assert texts[1] == "सिमरन घर गई"  # placeholder lost: translated again without protection


def test_nmt_loader_is_the_one_the_stage_uses_and_never_downloads(tmp_path, tiny_nmt, network_attempts):
    nmt = load_seq2seq(str(tiny_nmt), tmp_path, "cpu")
    assert nmt.family == "plain" and type(nmt.model).__name__ == "MarianMTModel" and not nmt.model.training
    attempts = network_attempts
    with pytest.raises(PermanentError) as err:
        load_seq2seq("facebook/nllb-200-distilled-600M", tmp_path, "cpu")
    assert "SECOND_PASS_TRANSLATION__NMT_MODEL" in str(err.value)
    assert f"HF_HOME={tmp_path / 'huggingface'} hf download facebook/nllb-200-distilled-600M" in str(err.value)
    assert attempts == []


# Plain functions -------------------------------------------------------------------------------------


def test_protect_and_restore_names():
    names = {"Raj": "Raj", "राज": "Raj", "Raj Malhotra": "Raj Malhotra", "सिमरन": "Simran"}
    text, mapping = protect("राज और raj malhotra, सिमरन से मिले। Rajesh नहीं।", names, 5)
    assert text == "[5] और [6], [7] से मिले। Rajesh नहीं।"
    assert mapping == {5: "Raj", 6: "Raj Malhotra", 7: "Simran"}
    restored, found = restore("[5] and [ 6 ] met [7 ]. Page [9].", mapping)
    assert restored == "Raj and Raj Malhotra met Simran. Page [9]." and found == {5, 6, 7}
    assert protect("no names here", {}, 1) == ("no names here", {})


def test_name_table_takes_variants_of_protected_names_only():
    glossary = GLOSSARY | {
        "entries": GLOSSARY["entries"]
        + [{"canonical": "Mumbai", "kind": "place", "variants": ["मुंबई"], "source": "x", "notes": ""}]
    }
    assert name_table(glossary) == {"Raj": "Raj", "Simran": "Simran", "राज": "Raj", "सिमरन": "Simran"}
    assert name_table(None) == {}


def test_windows_and_split():
    assert windows(["a", "b", "c"], 1) == [([0, 1], 0), ([0, 1, 2], 1), ([1, 2], 1)]
    assert windows(["a", "b"], 0) == [([0], 0), ([1], 0)]
    assert split_window("where is Raj | Simran went home", 2) == ["where is Raj", "Simran went home"]
    assert split_window("where is Raj || Simran went home", 2) == ["where is Raj", "Simran went home"]
    assert split_window("where is Raj Simran went home", 2) is None


def test_language_codes_per_model_family():
    class Stub:
        src_lang = None

        def convert_tokens_to_ids(self, token):
            return {"eng_Latn": 7}[token]

        def get_lang_id(self, code):
            return {"en": 9}[code]

    stub = Stub()
    assert language_setup("nllb", "hi", "en", stub) == ("", {"forced_bos_token_id": 7}) and stub.src_lang == "hin_Deva"
    assert language_setup("m2m100", "hi", "en", stub) == ("", {"forced_bos_token_id": 9}) and stub.src_lang == "hi"
    assert language_setup("indictrans", "hi", "en", stub) == ("hin_Deva eng_Latn ", {})
    assert language_setup("plain", "hi", "en", stub) == ("", {})
    with pytest.raises(PermanentError):
        language_setup("nllb", "xx", "en", stub)


def test_covered_ids_by_time():
    segments = [
        {"id": 0, "start": 0.0, "end": 2.0},
        {"id": 1, "start": 2.5, "end": 4.0},
        {"id": 2, "start": 4.2, "end": 9.0},
    ]
    assert covered_ids(0.0, 4.1, segments) == [0, 1]
    assert covered_ids(3.9, 5.0, segments) == [2]  # covers neither half: the one it overlaps most
    assert covered_ids(10.0, 11.0, segments) == []
    assert covered_ids(0.0, 9.0, segments) == [0, 1, 2]


def test_a_variant_maps_to_the_part_of_the_name_it_spells():
    glossary = {
        "protected_names": ["Raj Malhotra"],
        "entries": [
            {"canonical": "Raj Malhotra", "kind": "person", "variants": ["Raj", "Malhotra", "Raaj", "Raaj Malhotra"]}
        ],
    }
    table = name_table(glossary)
    assert table["Raaj"] == "Raj"
    assert table["Raaj Malhotra"] == "Raj Malhotra"
    assert table["Malhotra"] == "Malhotra"


def test_nmt_leaves_a_line_said_in_english_as_said(tmp_path, tiny_nmt):
    from tests.support import make_job

    job = make_job(tmp_path)
    upstream = hindi_upstream(job, english=(10.0, "Okay, see you tomorrow."))
    settings = TranslationSettings(backend="nmt", nmt_model=str(tiny_nmt), batch_size=2, context_segments=1)
    result = run_translation(job, upstream, settings)
    out = translation(job)
    assert [s["text"] for s in out["segments"]] == [
        "where is Raj",
        "Simran went home",
        "I do not know",
        "Okay, see you tomorrow.",
    ]
    assert [s["source_ids"] for s in out["segments"]] == [[0], [1], [2], [3]]
    assert result.summary["said_in_english"] == 1 and result.summary["context_windows"] == 3
