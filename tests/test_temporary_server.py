"""The temporary Prefect server a run starts early when no API URL is configured."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.temporary_server import configured_api_url, serving


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("PREFECT_API_URL", "PREFECT_PROFILE", "PREFECT_PROFILES_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    return tmp_path


def test_an_api_url_in_the_environment_or_the_active_profile_means_no_early_server(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not configured_api_url()  # a new machine: no profiles file
    (home / "profiles.toml").write_text(
        'active = "ephemeral"\n[profiles.ephemeral]\nPREFECT_SERVER_EPHEMERAL_ENABLED = "true"\n'
        '[profiles.local]\nPREFECT_API_URL = "http://127.0.0.1:4200/api"\n'
    )
    assert not configured_api_url()
    monkeypatch.setenv("PREFECT_PROFILE", "local")
    assert configured_api_url()
    monkeypatch.delenv("PREFECT_PROFILE")
    (home / "profiles.toml").write_text('active = "local"\n[profiles.local]\nPREFECT_API_URL = "http://h:1/api"\n')
    assert configured_api_url()
    (home / "profiles.toml").write_text("not toml [")
    assert not configured_api_url()  # Prefect reports a broken profile itself; `serving` asks Prefect anyway
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    assert configured_api_url()


class Failing:
    """A server that never answered."""

    url = "http://127.0.0.1:9/api"

    def __init__(self) -> None:
        self.stopped = False

    def wait_ready(self, timeout_s: float) -> bool:
        return False

    def stop(self) -> None:
        self.stopped = True


def test_a_server_that_does_not_start_is_stopped_and_prefect_decides(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = Failing()
    with temporary_settings(restore_defaults={PREFECT_API_URL}):  # as on a new machine
        with serving(server):  # type: ignore[arg-type]
            assert PREFECT_API_URL.value() is None  # Prefect starts its temporary server as it always does
    assert server.stopped
    assert "Prefect starts its own" in capsys.readouterr().err


def test_an_api_url_prefect_finds_elsewhere_wins_over_the_early_server(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = Failing()
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}):  # e.g. from prefect.toml
        with serving(server):  # type: ignore[arg-type]
            assert PREFECT_API_URL.value() == "http://127.0.0.1:4200/api"
    assert server.stopped and capsys.readouterr().err == ""
