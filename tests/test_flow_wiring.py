"""The flow is the pipeline: it names the eleven stages in order and passes each what its body reads."""

from __future__ import annotations

import ast
import inspect
import textwrap
from pathlib import Path

from flows import subtitle as subtitle_module
from flows.subtitle import PIPELINE
from tasks.contract import STAGE_ORDER
from tasks.kernel import with_parts
from tasks.lyrics_detection import lyrics_detection


def submitted_stages() -> list[tuple[str, set[str]]]:
    """(stage, upstream keywords) of every `run.submit(...)` in the flow function, in order."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(subtitle_module.subtitle.fn)))
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "submit":
            calls.append((node.lineno, node.args[0].id, {k.arg for k in node.keywords}))  # type: ignore[attr-defined]
    return [(name, keywords) for _, name, keywords in sorted(calls)]


def test_the_flow_submits_the_eleven_stages_in_order() -> None:
    parts = {part.name for spec in PIPELINE for part in spec.parts}
    assert [name for name, _ in submitted_stages() if name not in parts] == list(STAGE_ORDER)
    assert [spec.name for spec in PIPELINE] == list(STAGE_ORDER)


def test_the_audio_half_of_lyrics_detection_needs_nothing_from_the_speech_stages() -> None:
    """So it can run beside them where the machine has room (a GPU for asr, or CPU slots to spare)."""
    order = [name for name, _ in submitted_stages()]
    (part,) = lyrics_detection.parts
    assert part.name in lyrics_detection.needs and part.needs == ("demux",)
    assert order.index(part.name) < order.index("lyrics_detection")
    assert part.heavy and not lyrics_detection.heavy  # the text half never waits for a CPU slot


def test_a_whole_run_plans_every_stage_and_forces_none() -> None:
    """The command line checks a whole run's room with this plan before it imports the flow."""
    from tasks.kernel import selected_stages

    assert selected_stages(PIPELINE, None, None) == (set(STAGE_ORDER) | {"music_features"}, set())


def test_a_stage_named_again_runs_with_its_parts_and_one_forced_by_its_text_keeps_its_audio_half() -> None:
    from tasks.kernel import selected_stages

    planned, forced = selected_stages(PIPELINE, ["lyrics_detection"], None)
    assert forced == {"lyrics_detection", "music_features"}
    assert {"demux", "silero_vad", "asr"} <= planned and "subtitle_gen" not in planned
    _, forced = selected_stages(PIPELINE, None, "asr")
    assert "lyrics_detection" in forced and "music_features" not in forced
    _, forced = selected_stages(PIPELINE, None, "demux")
    assert "music_features" in forced


def test_each_stage_is_passed_exactly_what_its_body_declares() -> None:
    by_name = {spec.name: spec for spec in with_parts(PIPELINE)}
    for name, keywords in submitted_stages():
        assert keywords == set(by_name[name].needs), name


def test_each_stage_body_uses_every_input_it_declares() -> None:
    """A declared input the body never touches would re-run the stage for nothing when it changes."""
    for spec in with_parts(PIPELINE):
        tree = ast.parse(textwrap.dedent(inspect.getsource(spec.body)))
        used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}
        unused = [name for name in (*spec.needs, *(["film"] if spec.uses_film else [])) if name not in used]
        assert not unused, f"stage {spec.name} declares {unused} but never reads them"


def test_the_flow_function_fits_one_screen() -> None:
    lines = inspect.getsource(subtitle_module.subtitle.fn).splitlines()
    assert len(lines) <= 40, len(lines)


def test_no_stage_spells_another_stages_file_name() -> None:
    """Stages read each other's files through the typed documents, never by a literal name."""
    documents = {
        "media.json",
        "speech_segments.json",
        "speech_probability.json",
        "speakers.json",
        "tmdb.json",
        "glossary.json",
        "transcript.json",
        "translation.json",
        "english.json",
        "songs.json",
        "music_features.json",
        "subtitles.json",
        "audio.wav",
    }
    tasks = Path(subtitle_module.__file__).resolve().parents[1] / "tasks"
    for path in tasks.glob("*.py"):
        if path.name in {"documents.py", "demux.py"}:
            continue
        text = path.read_text(encoding="utf-8")
        assert not [name for name in documents if f'"{name}"' in text], path.name


def test_a_parts_cache_key_hashes_only_the_settings_it_reads() -> None:
    """A new song threshold re-runs the text half of lyrics_detection, not the music features."""
    from settings.stages import LyricsSettings
    from tasks.kernel import RunEnv
    from tasks.lyrics_detection import music_features

    env = RunEnv(cache_root="/cache")
    key = lambda spec, settings: spec.cache_key("20261207-0001", settings, {}, None, env)  # noqa: E731
    base, threshold, window = LyricsSettings(), LyricsSettings(threshold=0.6), LyricsSettings(window_s=60)
    assert key(music_features, base) == key(music_features, threshold) != key(music_features, window)
    assert key(lyrics_detection, base) != key(lyrics_detection, threshold)
