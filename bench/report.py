"""The benchmark's figures: targets from issues 13 and 14, the printed table and the JSON report."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

GB = 2**30
MB = 2**20


@dataclass(frozen=True)
class Target:
    """One figure against its target: `op` is "<=", "<", ">=" or "=="."""

    name: str
    value: float | None
    op: str
    limit: float
    issue: int
    film: str = ""

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        v, t = self.value, self.limit
        return {"<=": v <= t + 1e-9, "<": v < t, ">=": v >= t - 1e-9, "==": abs(v - t) < 1e-9}[self.op]

    def note(self, digits: int = 2) -> str:
        op = {"<=": "\u2264", ">=": "\u2265", "<": "<", "==": "="}[self.op]
        mark = {True: "met", False: "MISSED", None: "n/a"}[self.met]
        return f"(target {op} {self.limit:g}) {mark}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"met": self.met}


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt(value: float | None, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}{unit}"


def film_targets(film: dict[str, Any]) -> list[Target]:
    """Issue 13 per film (quality of the pipeline, WER against WhisperX) and issue 14 (speed)."""
    name = film["name"]
    q, speed = film["quality"], film["speed"]
    p, w = q["pipeline"], q["whisperx"]
    out = [
        Target("WER ratio pipeline / WhisperX", ratio(p["wer"]["wer"], w["wer"]["wer"]), "<=", 0.8, 13, name),
        Target("lines lost (pipeline)", p["lines_lost"], "==", 0, 13, name),
        Target("names right (pipeline)", p["names"]["share"], ">=", 0.9, 13, name),
        Target("start offset median s (pipeline)", p["offsets"]["median_s"], "<=", 0.2, 13, name),
        Target("start offset p90 s (pipeline)", p["offsets"]["p90_s"], "<=", 0.5, 13, name),
        Target("hard-rule breaks (pipeline QC)", film.get("pipeline_qc", {}).get("hard_violations"), "==", 0, 13, name),
        Target("hard-rule breaks (SRT, project rules)", p["rules"]["hard"], "==", 0, 13, name),
        Target("short events < 5/6 s (pipeline)", p["rules"]["short"], "==", 0, 13, name),
    ]
    minutes = film["duration_s"] / 60
    whole = speed["ratio_whole"]
    if minutes < 3:
        out.append(Target("wall ratio pipeline / WhisperX (1-minute film)", whole, "<=", 1.5, 14, name))
    elif minutes >= 9:
        out.append(Target("wall ratio pipeline / WhisperX (10 minutes and more)", whole, "<=", 1.3, 14, name))
    out.append(Target("asr stage / WhisperX transcription", speed["ratio_asr"], "<=", 1.05, 14, name))
    if 9 <= minutes <= 12:
        peak = speed["pipeline"]["peak_rss_mb"]
        out.append(
            Target("pipeline peak memory GB (10 minutes)", peak * MB / GB if peak else None, "<=", 2.0, 14, name)
        )
    out.append(Target("prepare s", speed["pipeline"]["prepare_s"], "<", 2.0, 14, name))
    if film.get("cached_rerun", {}).get("running_server_s") is not None:
        out.append(Target("cached re-run s, running server", film["cached_rerun"]["running_server_s"], "<=", 4.0, 14,
                          name))  # fmt: skip
    if film.get("cached_rerun", {}).get("temporary_server_s") is not None:
        out.append(Target("cached re-run s, temporary server", film["cached_rerun"]["temporary_server_s"], "<=", 10.0,
                          14, name))  # fmt: skip
    return out


def scaling_targets(films: list[dict[str, Any]]) -> list[Target]:
    """Seconds per audio minute at 30 minutes against 10; peak memory at 30 against 10."""
    by_minutes = {round(f["duration_s"] / 60): f for f in films}
    ten, thirty = by_minutes.get(10), by_minutes.get(30)
    if not (ten and thirty):
        return []
    spm = ratio(thirty["speed"]["pipeline"]["s_per_audio_min"], ten["speed"]["pipeline"]["s_per_audio_min"])
    mem = ratio(thirty["speed"]["pipeline"]["peak_rss_mb"], ten["speed"]["pipeline"]["peak_rss_mb"])
    return [
        Target("s per audio minute, 30 min / 10 min", spm, "<=", 1.05, 14, "scaling"),
        Target("peak memory, 30 min / 10 min", mem, "<=", 1.0, 14, "scaling"),
    ]


def _quality_rows(p: dict[str, Any], w: dict[str, Any], targets: dict[str, Target]) -> list[tuple[str, str, str, str]]:
    def names(s: dict[str, Any]) -> str:
        n = s["names"]
        return f"{n['right']}/{n['total']} {100 * n['share']:.0f}%" if n["share"] is not None else "-"

    def offsets(s: dict[str, Any]) -> str:
        o = s["offsets"]
        return f"{fmt(o['median_s'])} / {fmt(o['p90_s'])} s"

    wer_t = targets["WER ratio pipeline / WhisperX"]
    return [
        ("WER (dialogue and lyrics)", fmt(p["wer"]["wer"], digits=3), fmt(w["wer"]["wer"], digits=3),
         f"ratio {fmt(wer_t.value)} {wer_t.note()}"),
        ("  WER of the dialogue alone (songs off)", fmt(p["dialogue_wer"]["wer"], digits=3),
         fmt(w["dialogue_wer"]["wer"], digits=3),
         f"ratio {fmt(ratio(p['dialogue_wer']['wer'], w['dialogue_wer']['wer']))}"),
        ("lines lost", f"{p['lines_lost']} / {p['turns']}", f"{w['lines_lost']} / {w['turns']}",
         targets["lines lost (pipeline)"].note()),
        ("names spelt right", names(p), names(w), targets["names right (pipeline)"].note()),
        ("names put where the film says another word", str(len(p.get("names_put_in", []))),
         str(len(w.get("names_put_in", []))), "no target; the name check's wrong respellings show here"),
        ("start offset median / p90", offsets(p), offsets(w),
         f"{targets['start offset median s (pipeline)'].note()}; "
         f"p90 {targets['start offset p90 s (pipeline)'].note()}"),
        ("hard-rule breaks (project rules on SRT)", str(p["rules"]["hard"]), str(w["rules"]["hard"]),
         targets["hard-rule breaks (SRT, project rules)"].note()),
        ("lines > 42 / > 2 lines / > 20 cps",
         f"{p['rules']['line_length']} / {p['rules']['line_count']} / {p['rules']['reading_speed']}",
         f"{w['rules']['line_length']} / {w['rules']['line_count']} / {w['rules']['reading_speed']}", ""),
        ("events shorter than 5/6 s", str(p["rules"]["short"]), str(w["rules"]["short"]),
         targets["short events < 5/6 s (pipeline)"].note()),
        ("dialogue lines shown as lyrics", str(len(p["dialogue_as_lyrics"])), str(len(w["dialogue_as_lyrics"])), ""),
        ("events", str(p["events"]), str(w["events"]), ""),
    ]  # fmt: skip


def _speed_rows(film: dict[str, Any], targets: dict[str, Target]) -> list[tuple[str, str, str, str]]:
    s = film["speed"]
    p, w = s["pipeline"], s["whisperx"]
    n = s["pairs"]
    whole = next((t for k, t in targets.items() if k.startswith("wall ratio")), None)
    rows = [
        (f"wall s (prepare + run; median of {n})", fmt(p["wall_s"], digits=1), fmt(w["wall_s"], digits=1),
         f"ratio {fmt(s['ratio_whole'])} " + (whole.note() if whole else "(no target at this length)")),
        ("  run alone / prepare", f"{fmt(p['run_s'], digits=1)} / {fmt(p['prepare_s'], digits=2)}", "",
         "prepare " + targets["prepare s"].note()),
        ("peak memory MB (process tree)", fmt(p["peak_rss_mb"], digits=0), fmt(w["peak_rss_mb"], digits=0),
         f"ratio {fmt(ratio(p['peak_rss_mb'], w['peak_rss_mb']))}"),
        ("real-time factor", fmt(p["rtf"], digits=3), fmt(w["rtf"], digits=3), ""),
        ("s per audio minute", fmt(p["s_per_audio_min"], digits=1), fmt(w["s_per_audio_min"], digits=1), ""),
        ("asr stage / WhisperX transcription s", fmt(p["asr_s"], digits=1), fmt(w["transcription_s"], digits=1),
         f"ratio {fmt(s['ratio_asr'])} {targets['asr stage / WhisperX transcription'].note()}"),
        ("  asr after loading Whisper (as WhisperX's figure)", fmt(p.get("asr_after_load_s"), digits=1),
         fmt(w["transcription_s"], digits=1), f"ratio {fmt(s.get('ratio_asr_after_load'))}"),
        ("  asr decoding alone (its log)", fmt(p.get("asr_decode_s"), digits=1), "", ""),
        ("  asr stage / WhisperX whole wall", "", "", f"ratio {fmt(ratio(p['asr_s'], w['wall_s']))}"),
    ]  # fmt: skip
    cached = film.get("cached_rerun", {})

    def where(x: dict[str, Any]) -> str:
        """Process start to the flow's first log line, the flow, the flow's end to exit."""
        return (f"[start-up {fmt(x.get('to_flow_start_s'), digits=1)} + flow {fmt(x.get('flow_s'), digits=1)} "
                f"+ exit {fmt(x.get('after_flow_s'), digits=1)} s]")  # fmt: skip

    for key, label in (("running", "running server"), ("temporary", "temporary server")):
        if cached.get(f"{key}_server_s") is None:
            continue
        detail = cached.get(key, {})
        stale = detail.get("not_cached")
        rows.append((f"cached re-run s, {label}", fmt(cached[f"{key}_server_s"], digits=1), "",
                     f"{targets[f'cached re-run s, {label}'].note()} {where(detail)}"
                     + (f"; NOT cached: {', '.join(stale)}" if stale else "")))  # fmt: skip
    temp = film.get("temporary_server_run")
    if temp:
        rows.append(("whole run with the temporary server s", fmt(temp["wall_s"], digits=1), "",
                     f"peak {fmt(temp['peak_rss_mb'], ' MB', 0)} {where(temp)}"))  # fmt: skip
    first = film["pairs"][0]["pipeline"].get("orchestrator") or {}
    rows.append(("  run with the running server, where", "", "", where(first)))
    return rows


def _table(rows: list[tuple[str, str, str, str]]) -> list[str]:
    head = ("figure", "pipeline", "WhisperX", "")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]
    out = [f"  {head[0]:<{widths[0]}}  {head[1]:>{widths[1]}}  {head[2]:>{widths[2]}}"]
    for r in rows:
        out.append(f"  {r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}".rstrip())
    return out


def _stage_line(stages: dict[str, Any]) -> list[str]:
    out = ["  pipeline stages (first pair): seconds [peak tree MB during the stage]"]
    parts = []
    for name, s in stages.items():
        peak = (s.get("rss_mb") or {}).get("peak")
        state = "" if s.get("state") == "done" else f" {s.get('state')}"
        parts.append(f"{name} {fmt(s.get('duration_s'), digits=1)}{state}" + (f" [{peak:.0f}]" if peak else ""))
    for i in range(0, len(parts), 4):
        out.append("    " + ", ".join(parts[i : i + 4]))
    return out


def render(report: dict[str, Any]) -> str:
    lines = []
    setup = report["setup"]
    lines.append(
        f"Benchmark: pipeline vs WhisperX CLI, {setup['device']}, model {setup['model']} ({setup['compute_type']}, "
        f"batch {setup['batch_size']}), {setup['cores']} cores, load average at start {setup['load_start']}"
    )
    if setup.get("settings"):
        lines.append(f"Pipeline settings given with --set: {' '.join(setup['settings'])}")
    server = report.get("server", {})
    lines.append(
        f"Prefect server: migration {fmt(server.get('migrate_s'), ' s', 1)}, "
        f"start {fmt(server.get('start_s'), ' s', 1)}"
        f" (PREFECT_HOME {server.get('home')}), memory {fmt(server.get('rss_mb_end'), ' MB', 0)} at the end; "
        f"temporary-server home migrated in {fmt(report.get('temporary_home', {}).get('migrate_s'), ' s', 1)}"
    )
    for film in report["films"]:
        truth = film["truth_summary"]
        lines.append("")
        lines.append(f"{film['name']}: {film['duration_s']:.1f} s, {truth['turns']} turns, {truth['songs']} song(s), "
                     f"{truth['names']} name mentions, voices {', '.join(truth['voices'])}, "
                     f"{truth['noise']} noise")  # fmt: skip
        targets = {t.name: t for t in film_targets(film)}
        lines += _table(_quality_rows(film["quality"]["pipeline"], film["quality"]["whisperx"], targets)
                        + _speed_rows(film, targets))  # fmt: skip
        lines += _stage_line(film["stages"])
        qc = film.get("pipeline_qc") or {}
        found = ", ".join(f"{r['start']:.1f}-{r['end']:.1f}" for r in qc.get("songs_found") or []) or "none"
        true = ", ".join(f"{r['start']:.1f}-{r['end']:.1f}" for r in film.get("songs", [])) or "none"
        lines.append(f"  pipeline QC: {qc.get('hard_violations')} hard-rule breaks, speech covered "
                     f"{fmt(100 * qc['speech_coverage'] if qc.get('speech_coverage') is not None else None, ' %', 1)}; "
                     f"songs found {found} (truth {true})")  # fmt: skip
        lost = film["quality"]["pipeline"]["lost"]
        for item in lost:
            lines.append(f"  pipeline lost: [{item['start']:.2f}-{item['end']:.2f}] {item['text']}")
        lines.append(f"  job folder: {film['pairs'][0]['pipeline']['job_dir']}")
    scaling = report.get("scaling", [])
    if scaling:
        lines.append("")
        for t in scaling:
            target = Target(**{k: t[k] for k in ("name", "value", "op", "limit", "issue", "film")})
            lines.append(f"{t['name']}: {fmt(t['value'])} {target.note()}")
    all_targets = report.get("targets", [])
    met = sum(1 for t in all_targets if t["met"] is True)
    missed = [t for t in all_targets if t["met"] is False]
    lines.append("")
    lines.append(f"Targets: {met} met, {len(missed)} missed, {len(all_targets) - met - len(missed)} not measured")
    for t in missed:
        lines.append(
            f"  missed: {t['film']}: {t['name']} = {fmt(t['value'], digits=3)} (target {t['op']} {t['limit']:g})"
        )
    return "\n".join(lines)


def write(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str))
    tmp.replace(path)
