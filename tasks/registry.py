"""The pipeline's stages, in order. Each stage module registers itself with `@stage`."""

from __future__ import annotations

import importlib

from tasks.contract import STAGE_ORDER
from tasks.stage import STAGES, StageSpec


def pipeline_stages() -> list[StageSpec]:
    for name in STAGE_ORDER:
        importlib.import_module(f"tasks.{name}")
    return [STAGES[name] for name in STAGE_ORDER]
