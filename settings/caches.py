"""Model cache folders, exported before any ML library is imported.

huggingface_hub reads HF_HOME once, at import. Every package of this project imports this
module from its `__init__`, so the variables are set whatever the entry point imports next.
"""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path

from settings.paths import PROJECT_ROOT, config_file


class CacheRootError(RuntimeError):
    """The cache root cannot be created or written."""


def cache_root() -> Path:
    """CACHE_ROOT from the environment, else from the project config file, else `.cache`."""
    if os.environ.get("CACHE_ROOT"):
        return Path(os.environ["CACHE_ROOT"]).expanduser()
    cfg = config_file()
    if cfg.is_file():
        with cfg.open("rb") as fh:
            value = {k.lower(): v for k, v in tomllib.load(fh).items()}.get("cache_root")
        if value:
            return Path(value).expanduser()
    return PROJECT_ROOT / ".cache"


def ensure_cache_dirs(root: Path) -> tuple[Path, Path]:
    """Create `torch/` and `huggingface/` under root; a read-only root names the setting."""
    torch_home, hf_home = root / "torch", root / "huggingface"
    try:
        for folder in (torch_home, hf_home):
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".write-test-{os.getpid()}"
            probe.touch()
            probe.unlink()
    except OSError as exc:
        raise CacheRootError(
            f"The model cache root {root} is not writable ({exc.strerror}). "
            "Point the CACHE_ROOT setting (environment variable or cache_root in "
            f"{config_file()}) at a writable folder."
        ) from exc
    return torch_home, hf_home


_EXPORTED = "FILMSUBS_EXPORTED_HF_HOME"  # marks an HF_HOME we set, so a child process does not take it for the user's


def user_hf_home() -> Path | None:
    """The HF_HOME the user set themselves, if any."""
    value = os.environ.get("HF_HOME")
    return Path(value).expanduser() if value and value != os.environ.get(_EXPORTED) else None


def hf_home(root: Path | None = None) -> Path:
    """The one answer to "where is the Hugging Face cache": the user's own HF_HOME when they set one,
    else `<CACHE_ROOT>/huggingface` (of `root`, or of the project's cache root)."""
    return user_hf_home() or Path(root if root is not None else cache_root()) / "huggingface"


def hub_cache(root: Path | None = None) -> Path:
    """Where huggingface_hub keeps model snapshots."""
    return hf_home(root) / "hub"


def export_cache_env() -> Path:
    """Set TORCH_HOME and HF_HOME (unless the user set them) and return the cache root."""
    root = cache_root()
    torch_home, hf_folder = ensure_cache_dirs(root)
    os.environ.setdefault("TORCH_HOME", str(torch_home))
    if user_hf_home() is None:
        os.environ["HF_HOME"] = os.environ[_EXPORTED] = str(hf_folder)
    if "huggingface_hub" in sys.modules:
        # Imported before us: its constants were fixed from the old environment.
        import huggingface_hub.constants as hf_constants

        hf_constants.HF_HOME = os.environ["HF_HOME"]
        hf_constants.HF_HUB_CACHE = os.path.join(os.environ["HF_HOME"], "hub")
    return root
