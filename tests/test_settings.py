"""Settings layers, job files, unknown keys and secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from settings.model import Settings, job_env_text, load_settings, settings_digest


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "config"
    folder.mkdir()
    monkeypatch.setenv("FILMSUBS_CONFIG_DIR", str(folder))
    for name in ("DEVICE", "ASR__MODEL", "ASR__BEAM_SIZE", "HF_TOKEN", "TMDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return folder


def test_layers_in_priority_order(config_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (config_dir / "filmsubs.toml").write_text('[asr]\nmodel = "from-config"\nbeam_size = 3\nlanguage = "en"\n')
    job_env = tmp_path / ".20260101-0001.env"
    job_env.write_text('ASR__MODEL="from-job"\nASR__BEAM_SIZE="4"\n')
    assert load_settings().asr.model == "from-config"
    settings = load_settings(job_env)
    assert (settings.asr.model, settings.asr.beam_size, settings.asr.language) == ("from-job", 4, "en")
    monkeypatch.setenv("ASR__BEAM_SIZE", "6")
    assert load_settings(job_env).asr.beam_size == 6
    assert load_settings(job_env, overrides={"asr": {"beam_size": 8}}).asr.beam_size == 8
    assert Settings().asr.model == "from-config"


def test_device_keeps_its_name(config_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVICE", "cuda:1")
    assert load_settings().device == "cuda:1"
    monkeypatch.setenv("DEVICE", "tpu")
    with pytest.raises(ValueError, match="DEVICE must be"):
        load_settings()


def test_job_file_round_trips(config_dir: Path, tmp_path: Path) -> None:
    settings = load_settings(
        overrides={
            "film": {"title": 'Kal "Ho" Naa Ho', "year": 2003},
            "diarization": {"speaker_names": {"SPEAKER_00": "Aman"}},
            "asr": {"initial_prompt": "a\\b 'c'"},
        }
    )
    path = tmp_path / ".job.env"
    path.write_text(job_env_text(settings))
    assert load_settings(path) == settings


@pytest.mark.parametrize("line, key", [("ASR__MODLE=x", "ASR__MODLE"), ("DEVICES=cpu", "DEVICES")])
def test_unknown_key_in_job_file_is_an_error(config_dir: Path, tmp_path: Path, line: str, key: str) -> None:
    path = tmp_path / ".job.env"
    path.write_text(job_env_text(load_settings()) + line + "\n")
    with pytest.raises(ValueError, match=key):
        load_settings(path)


def test_unknown_key_in_config_file_is_an_error(config_dir: Path) -> None:
    (config_dir / "filmsubs.toml").write_text("[asr]\nbeem_size = 3\n")
    with pytest.raises(ValueError, match="beem_size"):
        load_settings()


def test_secrets_stay_out_of_job_files_logs_and_keys(
    config_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (config_dir / "secrets.json").write_text(json.dumps({"HF_TOKEN": "hf_secret_from_file"}))
    monkeypatch.setenv("TMDB_API_KEY", "tmdb-secret-from-env")
    settings = load_settings()
    assert settings.hf_token.get_secret_value() == "hf_secret_from_file"
    assert settings.tmdb_api_key.get_secret_value() == "tmdb-secret-from-env"
    text = job_env_text(settings)
    for leak in (text, repr(settings), str(settings), settings_digest(settings.tmdb)):
        assert "secret-from" not in leak and "secret_from" not in leak
    job = tmp_path / ".job.env"
    job.write_text(text + 'HF_TOKEN="x"\n')
    with pytest.raises(ValueError, match="must not be stored in a job file"):
        load_settings(job)


def test_secrets_file_holds_only_secrets(config_dir: Path) -> None:
    (config_dir / "secrets.json").write_text(json.dumps({"DEVICE": "cpu"}))
    with pytest.raises(ValueError, match="only hf_token, tmdb_api_key"):
        load_settings()


def test_each_stage_gets_only_its_own_sub_model() -> None:
    settings = Settings()
    assert type(settings.stage("asr")).__name__ == "AsrSettings"
    assert not hasattr(settings.stage("asr"), "tmdb_api_key")
    with pytest.raises(KeyError):
        settings.stage("film")


def test_retry_settings_do_not_change_the_cache_key() -> None:
    a, b = Settings().asr, Settings().asr.model_copy(update={"retries": 7})
    assert settings_digest(a) == settings_digest(b)
    assert settings_digest(a) != settings_digest(a.model_copy(update={"beam_size": 1}))


def test_source_lang_sets_the_language_asr_decodes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().stage("asr").language == "hi"  # the film's default language
    assert Settings(film={"source_lang": "en"}).stage("asr").language == "en"
    assert Settings(film={"source_lang": "en"}, asr={"language": "auto"}).stage("asr").language == "auto"
    monkeypatch.setenv("FILM__SOURCE_LANG", "EN")
    assert Settings().stage("asr").language == "en"


def test_the_translate_pass_decodes_as_asr_says() -> None:
    settings = Settings(asr={"no_speech_threshold": 0.8, "chunk_s": 15.0, "beam_size": 2})
    decoding = settings.stage("second_pass_translation").decoding
    assert (decoding.no_speech_threshold, decoding.chunk_s, decoding.beam_size) == (0.8, 15.0, 2)
    before = settings_digest(Settings().stage("second_pass_translation"))
    assert settings_digest(settings.stage("second_pass_translation")) != before  # and its cache key follows


def test_songs_in_subtitles_is_a_subtitle_setting() -> None:
    """Flipping it re-runs subtitle_gen only: the music analysis (lyrics_detection) keeps its key."""
    on, off = Settings(), Settings(subtitle_gen={"subtitle_songs": False})
    assert settings_digest(on.stage("lyrics_detection")) == settings_digest(off.stage("lyrics_detection"))
    assert settings_digest(on.stage("subtitle_gen")) != settings_digest(off.stage("subtitle_gen"))


def test_one_answer_for_the_hugging_face_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's own HF_HOME wins everywhere; otherwise <CACHE_ROOT>/huggingface, for asr and diarization alike."""
    from settings.caches import hub_cache
    from tasks.diarization import fetch_hint
    from tasks.whisper_models import fetch_command

    assert hub_cache(tmp_path) == tmp_path / "huggingface" / "hub"
    assert f"HF_HOME={tmp_path / 'huggingface'} " in fetch_command("x/y", tmp_path)
    assert f"HF_HOME={tmp_path / 'huggingface'}." in fetch_hint(["x/y"], tmp_path)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "mine"))
    assert hub_cache(tmp_path) == tmp_path / "mine" / "hub"
    assert f"HF_HOME={tmp_path / 'mine'} " in fetch_command("x/y", tmp_path)
    assert f"HF_HOME={tmp_path / 'mine'}." in fetch_hint(["x/y"], tmp_path)


def test_an_empty_glossary_setting_clears_it(config_dir: Path, tmp_path: Path) -> None:
    """`--set PRE_NER__FILM_GLOSSARY_FILE=` means no film glossary, not the folder "." (pre_ner failed with
    "glossary file . does not exist")."""
    from flows.cli import parse_overrides

    cleared = load_settings(overrides=parse_overrides(["PRE_NER__FILM_GLOSSARY_FILE=", "PRE_NER__GLOSSARY_FILE= "]))
    assert cleared.pre_ner.film_glossary_file is None and cleared.pre_ner.glossary_file is None
    named = load_settings(overrides=parse_overrides([f"PRE_NER__FILM_GLOSSARY_FILE={tmp_path / 'cast.tsv'}"]))
    assert named.pre_ner.film_glossary_file == tmp_path / "cast.tsv"
