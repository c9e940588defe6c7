"""Project-relative locations. Nothing here is an absolute path written into the code."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT: Path = Path(__file__).resolve().parents[1]


def config_dir() -> Path:
    """The folder with the project config file and secrets; `FILMSUBS_CONFIG_DIR` moves it."""
    return Path(os.environ.get("FILMSUBS_CONFIG_DIR", PROJECT_ROOT / "config"))


def config_file() -> Path:
    return config_dir() / "filmsubs.toml"


def secrets_file() -> Path:
    return config_dir() / "secrets.json"
