"""diarization: DER and speaker count of the embedded backend on generated dialogues; backend choice; outputs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from pyannote.core import Annotation, Segment, Timeline
from pyannote.metrics.diarization import DiarizationErrorRate
from pydantic import SecretStr

from settings.stages import DemuxSettings, DiarizationSettings, SileroVadSettings
from tasks.contract import PermanentError
from tasks.diarization import (
    COMMUNITY_MODEL,
    ModelNotCached,
    choose_backend,
    labelled_turns,
    local_pipeline_config,
    rttm_text,
)
from tasks.speaker_embedding import (
    EmbeddedParams,
    cluster_speakers,
    cosine_distances,
    frame_scores,
    normalise,
    silhouette,
    viterbi,
)
from tests.media import dialogue, make_film
from tests.support import make_job, run_stage

# Turns of 2 to 8 s; gaps under 1 s, some under the VAD's minimum silence (0.3 s), so two
# speakers share one speech region and resegmentation must find the change inside it.
TWO_VOICES = [
    ("A", "Did you see the letter that came this morning from the bank?"),
    ("B", "Yes. They want the whole loan back before the end of the month."),
    ("A", "We cannot pay that much, not this year."),
    ("B", "Then we sell the shop. There is no other way, and you know it."),
    ("A", "My father built that shop with his own hands, brick by brick, forty years ago, and I will not sell it."),
    ("B", "I know. I am sorry, but we have no choice left."),
    ("A", "Give me one week. I will talk to my uncle in Mumbai."),
    ("B", "One week, then. Not a day more, or we lose the house as well."),
]
TWO_GAPS = [0.5, 0.15, 0.9, 0.2, 0.6, 0.15, 0.8, 0.5]
THREE_VOICES = [
    ("A", "Where were you last night? Your mother waited for hours at the door."),
    ("B", "I was at the studio. The director wanted one more take of the song."),
    ("A", "One more take, again? That is what you said last week."),
    ("C", "Both of you, stop it. The car is here and we are already late for the wedding."),
    ("B", "Fine, I am coming, give me one minute."),
    ("A", "Bring the gifts from the table, and do not forget the sweets this time."),
    ("C", "I have the sweets. Take the flowers and lock the door behind you."),
    ("B", "Who is driving us there tonight, and in which car?"),
    ("C", "I am driving. Nobody else gets the keys after what happened in Shimla."),
    ("A", "That was not my fault, the road was wet and the brakes were old."),
]
THREE_GAPS = [0.6, 0.15, 0.8, 0.2, 0.9, 0.5, 0.15, 0.7, 0.3, 0.5]


def pipeline_upto_diarization(tmp_path: Path, lines, gaps, settings: DiarizationSettings, secrets=None):
    """Film -> demux -> silero_vad -> diarization; returns the job, true turns, VAD regions and the result."""
    audio, truth = dialogue(lines, gaps=gaps)
    film = make_film(tmp_path / "dialogue.mka", [(audio, "hin")], video=False)
    job = make_job(tmp_path, film)
    demux = run_stage("demux", job, DemuxSettings())
    vad = run_stage("silero_vad", job, SileroVadSettings(), upstream={"demux": demux})
    started = time.monotonic()
    result = run_stage("diarization", job, settings, upstream={"demux": demux, "silero_vad": vad}, secrets=secrets)
    took = time.monotonic() - started
    regions = json.loads((job.dir / "04_silero_vad" / "speech_segments.json").read_text())["segments"]
    return job, truth, regions, result, took


def der_of(truth, turns, duration: float) -> tuple[float, dict]:
    reference, hypothesis = Annotation(), Annotation()
    for t in truth:
        reference[Segment(t.start, t.end)] = t.speaker
    for t in turns:
        hypothesis[Segment(t["start"], t["end"])] = t["speaker"]
    metric = DiarizationErrorRate(collar=0.25)
    detail = metric(reference, hypothesis, uem=Timeline([Segment(0, duration)]), detailed=True)
    return detail["diarization error rate"], detail


@pytest.mark.parametrize(
    "lines, gaps, voices",
    [(TWO_VOICES, TWO_GAPS, 2), (THREE_VOICES, THREE_GAPS, 3)],
    ids=["two_voices", "three_voices"],
)
def test_embedded_der_and_speaker_count(tmp_path, lines, gaps, voices):
    job, truth, regions, result, took = pipeline_upto_diarization(
        tmp_path, lines, gaps, DiarizationSettings(backend="embedded")
    )
    out = json.loads((job.dir / "05_diarization" / "speakers.json").read_text())
    duration = truth[-1].end + 0.5
    der, detail = der_of(truth, out["turns"], duration)
    shared = [
        (a.end, b.start)
        for a, b in zip(truth, truth[1:], strict=False)
        if any(r["start"] < a.end and b.start < r["end"] for r in regions)
    ]
    print(
        f"{voices} voices, {duration:.1f} s, turns {[round(t.end - t.start, 1) for t in truth]}: "
        f"DER={der:.3f} (missed {detail['missed detection']:.2f} s, false alarm {detail['false alarm']:.2f} s, "
        f"confusion {detail['confusion']:.2f} s of {detail['total']:.2f} s), speakers found={len(out['speakers'])}, "
        f"turn changes inside one VAD region={len(shared)}, diarization {took:.1f} s"
    )
    assert all(2.0 <= t.end - t.start <= 8.0 for t in truth), "test material: turns of 2 to 8 s"
    assert shared, "test material: some turn change must fall inside one speech region"
    assert len(out["speakers"]) == voices and result.summary["speakers"] == voices
    assert der <= 0.15
    # a change inside a speech region is found: some hypothesis boundary lies within 0.5 s of it
    bounds = [t["start"] for t in out["turns"]]
    assert all(any(abs(b - (end + start) / 2) < 0.5 for b in bounds) for end, start in shared)
    assert out["backend"] == "embedded" and out["names"] == {}
    assert out["turns"][0]["speaker"] == "SPEAKER_00"
    rttm = (job.dir / "05_diarization" / "speakers.rttm").read_text().splitlines()
    assert len(rttm) == len(out["turns"]) and rttm[0].startswith(f"SPEAKER {job.job_id} 1 ")


def test_speaker_bounds_and_names(tmp_path):
    """max_speakers caps the count; names come only from the user's mapping, for labels that exist."""
    settings = DiarizationSettings(
        backend="embedded", max_speakers=2, speaker_names={"SPEAKER_00": "Meera", "SPEAKER_07": "Nobody"}
    )
    job, truth, _, result, _ = pipeline_upto_diarization(tmp_path, THREE_VOICES, THREE_GAPS, settings)
    out = json.loads((job.dir / "05_diarization" / "speakers.json").read_text())
    print(f"max_speakers=2 on 3 voices: {out['speakers']}")
    assert out["speakers"] == ["SPEAKER_00", "SPEAKER_01"]
    assert out["names"] == {"SPEAKER_00": "Meera"}
    assert all(t["speaker"].startswith("SPEAKER_") for t in out["turns"])


def test_one_voice_is_one_speaker(tmp_path):
    lines = [("C", text) for _, text in TWO_VOICES[:6]]
    job, _, _, result, _ = pipeline_upto_diarization(tmp_path, lines, 0.6, DiarizationSettings(backend="embedded"))
    print(f"monologue: {result.summary}")
    assert result.summary["speakers"] == 1


def test_labels_by_first_appearance_and_rttm():
    turns = labelled_turns([(5.0, 6.0, 7), (0.5, 2.0, 3), (2.5, 4.0, 7), (6.5, 6.5, 9), (7.0, 8.0, 3)])
    assert [t["speaker"] for t in turns] == ["SPEAKER_00", "SPEAKER_01", "SPEAKER_01", "SPEAKER_00"]
    assert rttm_text(turns[:1], "job") == "SPEAKER job 1 0.500 1.500 <NA> <NA> SPEAKER_00 <NA> <NA>\n"


def test_viterbi_smooths_flickers_and_keeps_real_changes():
    scores = np.tile([0.8, 0.7], (30, 1))
    scores[10] = [0.6, 0.9]  # one frame leaning to speaker 1: a flicker
    scores[18:] = [0.65, 0.85]  # a sustained change
    path = viterbi(scores, switch_penalty=0.6)
    assert path[10] == 0 and path[:18].max() == 0 and path[18:].min() == 1


def test_frame_scores_average_the_covering_windows():
    mids = np.arange(5) + 0.5
    similarity = np.array([[1.0, 0.0], [0.0, 1.0]])
    scores = frame_scores(mids, np.array([0.0, 2.0]), np.array([3.0, 4.0]), similarity)
    assert scores.tolist() == [[1, 0], [1, 0], [0.5, 0.5], [0, 1], [0, 1]]  # last frame: nearest window


def test_cluster_count_follows_the_data_and_the_bounds():
    rng = np.random.default_rng(0)
    centres = normalise(rng.standard_normal((3, 256)))
    embeddings = normalise(centres[np.repeat([0, 1, 2], 40)] + 0.05 * rng.standard_normal((120, 256)))
    assert cluster_speakers(embeddings, EmbeddedParams())[1]["count"] == 3
    assert cluster_speakers(embeddings, EmbeddedParams(max_speakers=2))[1]["count"] == 2
    one = normalise(centres[0] + 0.05 * rng.standard_normal((120, 256)))
    assert cluster_speakers(one, EmbeddedParams())[1]["count"] == 1
    assert cluster_speakers(one, EmbeddedParams(min_speakers=2))[1]["count"] == 2


def test_silhouette_equals_sklearns():
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(1)
    centres = normalise(rng.standard_normal((4, 64)))
    items = normalise(centres[rng.integers(0, 4, 200)] + 0.3 * rng.standard_normal((200, 64)))
    distances = cosine_distances(items)
    for labels in (rng.integers(0, 4, 200), np.r_[np.zeros(199, int), 1], np.repeat([0, 1, 2, 3], 50)):
        expected = silhouette_score(items, labels, metric="cosine")
        assert silhouette(distances, labels) == pytest.approx(expected, abs=1e-9)


# Backend choice ------------------------------------------------------------------------


def fake_cached_repo(cache: Path, repo: str, files: dict[str, str]) -> Path:
    """A repo laid out as huggingface_hub caches it (refs/main -> snapshots/<commit>/...)."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    for name, text in files.items():
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).write_text(text)
    return snapshot


COMMUNITY_CONFIG = """pipeline:
  name: pyannote.audio.pipelines.SpeakerDiarization
  params:
    segmentation: $model/segmentation
    embedding: $model/embedding
    plda: $model/plda
    clustering: VBxClustering
"""
V31_CONFIG = """pipeline:
  name: pyannote.audio.pipelines.SpeakerDiarization
  params:
    clustering: AgglomerativeClustering
    embedding: pyannote/wespeaker-voxceleb-resnet34-LM
    segmentation: pyannote/segmentation-3.0
"""


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    """An empty model cache root (CACHE_ROOT), so the hub cache is <root>/huggingface/hub."""
    monkeypatch.setenv("CACHE_ROOT", str(tmp_path))
    cache = tmp_path / "huggingface" / "hub"
    cache.mkdir(parents=True)
    return cache


def test_auto_falls_back_without_token(hf_cache):
    backend, reason, config = choose_backend(DiarizationSettings(backend="auto"), token=None)
    print(reason)
    assert backend == "embedded" and "HF_TOKEN" in reason and config is None


def test_auto_falls_back_when_model_not_cached(hf_cache):
    backend, reason, _ = choose_backend(DiarizationSettings(backend="auto"), token="hf_x")
    assert backend == "embedded" and "not in the model cache" in reason and COMMUNITY_MODEL in reason


def test_pyannote_without_token_is_a_clear_error(hf_cache):
    with pytest.raises(PermanentError) as err:
        choose_backend(DiarizationSettings(backend="pyannote"), token=None)
    message = str(err.value)
    print(message)
    for part in (
        "HF_TOKEN",
        f"https://huggingface.co/{COMMUNITY_MODEL}",
        f"hf download {COMMUNITY_MODEL}",
        "huggingface-cli download",
        "DIARIZATION__BACKEND=embedded",
    ):
        assert part in message


def test_pyannote_model_missing_is_a_clear_error(hf_cache):
    with pytest.raises(PermanentError, match=r"not in the model cache.*hf download pyannote/speaker-diarization-3.1"):
        choose_backend(
            DiarizationSettings(backend="pyannote", pyannote_model="pyannote/speaker-diarization-3.1"), token="hf_x"
        )


def test_cached_community_model_resolves_to_local_folders(hf_cache):
    snapshot = fake_cached_repo(hf_cache, COMMUNITY_MODEL, {"config.yaml": COMMUNITY_CONFIG})
    backend, reason, config = choose_backend(DiarizationSettings(backend="auto"), token="hf_x")
    assert backend == "pyannote"
    params = config["pipeline"]["params"]
    assert params["segmentation"] == {"checkpoint": str(snapshot), "subfolder": "segmentation"}
    assert params["plda"] == {"checkpoint": str(snapshot), "subfolder": "plda"}


def test_v31_needs_every_repo_its_config_names(hf_cache):
    fake_cached_repo(hf_cache, "pyannote/speaker-diarization-3.1", {"config.yaml": V31_CONFIG})
    segmentation = fake_cached_repo(hf_cache, "pyannote/segmentation-3.0", {"pytorch_model.bin": "x"})
    with pytest.raises(ModelNotCached) as err:
        local_pipeline_config("pyannote/speaker-diarization-3.1")
    assert err.value.repos == ["pyannote/wespeaker-voxceleb-resnet34-LM", COMMUNITY_MODEL]
    fake_cached_repo(hf_cache, "pyannote/wespeaker-voxceleb-resnet34-LM", {"pytorch_model.bin": "x"})
    community = fake_cached_repo(hf_cache, COMMUNITY_MODEL, {"config.yaml": COMMUNITY_CONFIG})
    params = local_pipeline_config("pyannote/speaker-diarization-3.1")["pipeline"]["params"]
    assert params["segmentation"] == str(segmentation)
    assert params["plda"] == {"checkpoint": str(community), "subfolder": "plda"}


LOCAL_VAD_PIPELINE = """pipeline:
  name: pyannote.audio.pipelines.VoiceActivityDetection
  params:
    segmentation: $model/segmentation
params:
  onset: 0.5
  offset: 0.5
  min_duration_on: 0.0
  min_duration_off: 0.0
"""


def test_pyannote_backend_runs_a_local_pipeline_without_network(tmp_path, hf_cache):
    """The pyannote path end to end (load from a local folder, run, label, write) with a stand-in pipeline:
    whisperx's packaged segmentation model in pyannote's VoiceActivityDetection (the real diarization
    models are gated and cannot be fetched here). Its one label must become SPEAKER_00."""
    import importlib.util

    weights = Path(importlib.util.find_spec("whisperx").submodule_search_locations[0]) / "assets" / "pytorch_model.bin"
    folder = tmp_path / "local_pipeline"
    (folder / "segmentation").mkdir(parents=True)
    (folder / "segmentation" / "pytorch_model.bin").symlink_to(weights)
    (folder / "config.yaml").write_text(LOCAL_VAD_PIPELINE)
    settings = DiarizationSettings(backend="pyannote", pyannote_model=str(folder))
    job, truth, _, result, took = pipeline_upto_diarization(tmp_path, TWO_VOICES[:3], TWO_GAPS[:3], settings)
    out = json.loads((job.dir / "05_diarization" / "speakers.json").read_text())
    print(f"local pyannote pipeline: {result.summary} in {took:.1f} s")
    assert out["backend"] == "pyannote" and out["speakers"] == ["SPEAKER_00"]
    assert abs(out["turns"][0]["start"] - truth[0].start) < 0.3


def test_stage_auto_without_token_runs_embedded_and_logs_the_switch(tmp_path, hf_cache):
    job, _, _, result, _ = pipeline_upto_diarization(
        tmp_path, TWO_VOICES[:4], TWO_GAPS[:4], DiarizationSettings(backend="auto"), secrets={"hf_token": None}
    )
    log = next(job.logs_dir.glob("05_diarization_*.log")).read_text()
    assert result.summary["backend"] == "embedded" and "switching to the embedded backend" in log


def test_stage_pyannote_without_token_fails_permanently(tmp_path, hf_cache):
    with pytest.raises(PermanentError, match="HF_TOKEN"):
        pipeline_upto_diarization(
            tmp_path,
            TWO_VOICES[:2],
            TWO_GAPS[:2],
            DiarizationSettings(backend="pyannote"),
            secrets={"hf_token": SecretStr("")},
        )
    manifest = json.loads((tmp_path / "20260101-0001" / "manifest.json").read_text())
    entry = manifest["stages"]["diarization"]
    assert entry["state"] == "failed" and "HF_TOKEN" in entry["message"]
