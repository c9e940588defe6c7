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
    settings = load_settings(overrides={"film": {"title": 'Kal "Ho" Naa Ho', "year": 2003},
                                        "diarization": {"speaker_names": {"SPEAKER_00": "Aman"}},
                                        "asr": {"initial_prompt": "a\\b 'c'"}})
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


def test_secrets_stay_out_of_job_files_logs_and_keys(config_dir: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
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
