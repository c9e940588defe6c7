"""`python -m bench`: the pipeline against the WhisperX CLI, side by side, on generated films.

    python -m bench --quick              # one 1-minute film
    python -m bench                      # three 1-minute films and one of 5 minutes
    python -m bench --long               # and 10 and 30 minutes
    python -m bench --repeats 3          # A B A B A B per film (speed figures: medians)
    python -m bench --fresh 4101,4102    # instead: a new 4-minute film per seed, nothing tuned on it
    python -m bench --device cuda --compute-type float16 --model large-v3    # see bench/gpu.sh

For each film: (A) the pipeline from a clean job, `prepare FILM --source-lang en` then
`python -m flows.subtitle JOB_ID`, against one Prefect server started for the whole benchmark;
(B) the WhisperX CLI on the same film, model, compute type and batch size (`--no_align`: it only
transcribes). Then the first pipeline job is run again (every stage from the cache), and for the
first film a whole run and a cached re-run go through Prefect's temporary server instead.

Quality figures compare the English SRT of each side with the film's truth (bench/scoring.py);
speed figures are wall time and the peak memory of the process tree. Targets from issues 13 and
14 are printed beside the figures; the exit status is 0 whatever they say, 1 when a run fails.
Everything lands in `--work` (default /tmp/filmsubs-bench): films/ (reused), and run-<time>/
with the jobs (out/), Prefect homes, WhisperX outputs and every command's log.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench import films as film_sets
from bench import report as reporting
from bench import runs, scoring


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="one 1-minute film")
    size.add_argument("--long", action="store_true", help="add films of 10 and 30 minutes (issue 14)")
    parser.add_argument("--films", help="comma-separated film names from the chosen set (default: all of it)")
    parser.add_argument(
        "--fresh",
        help="comma-separated seeds: instead of the set, a new film per seed from "
        "voices, names and sentences no bench or test film uses (bench/films.py fresh_spec)",
    )
    parser.add_argument("--fresh-minutes", type=float, default=4.0, help="length of each --fresh film")
    parser.add_argument("--repeats", type=int, default=1, help="pipeline / WhisperX pairs per film, A B A B")
    parser.add_argument("--report", type=Path, default=Path(__file__).with_name("report.json"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/filmsubs-bench"))
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (both sides)")
    parser.add_argument("--model", default="packaged", help="ASR__MODEL value for both sides (default: tiny.en)")
    parser.add_argument("--compute-type", default="int8")
    parser.add_argument("--batch-size", type=int, help="default: the pipeline's hardware policy for the device")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="settings",
        help="a setting for the pipeline side only, as `prepare --set` takes it (repeatable)",
    )
    parser.add_argument("--no-temporary-server", action="store_true", help="skip the temporary-server runs")
    parser.add_argument("--timeout", type=float, default=5400.0, help="seconds per measured command")
    parser.add_argument("--echo", action="store_true", help="show every command's output as it runs")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def choose_films(args: argparse.Namespace) -> list[film_sets.FilmSpec]:
    if args.fresh:
        try:
            seeds = [int(seed) for seed in args.fresh.split(",") if seed.strip()]
        except ValueError:
            raise SystemExit(f"--fresh takes whole-number seeds, comma-separated (got {args.fresh!r})") from None
        return [film_sets.fresh_spec(seed, args.fresh_minutes) for seed in seeds]
    chosen: tuple[film_sets.FilmSpec, ...] = (
        film_sets.QUICK_SET if args.quick else film_sets.LONG_SET if args.long else film_sets.DEFAULT_SET
    )
    if args.films:
        wanted = {name.strip() for name in args.films.split(",") if name.strip()}
        unknown = wanted - {spec.name for spec in film_sets.LONG_SET}
        if unknown:
            raise SystemExit(f"unknown film(s) {', '.join(sorted(unknown))}; "
                             f"films: {', '.join(s.name for s in film_sets.LONG_SET)}")  # fmt: skip
        chosen = tuple(s for s in film_sets.LONG_SET if s.name in wanted)
    return list(chosen)


def resolve_side(args: argparse.Namespace, out_root: Path) -> runs.Side:
    """The model folder both sides load, and the batch size the pipeline's policy gives the device."""
    from hardware.policy import stage_device
    from hardware.profile import cached_profile
    from settings.model import load_settings
    from tasks.whisper_models import cpu_threads, resolve_model

    cache_root = load_settings().cache_root
    choice = resolve_model(args.model, args.device, Path(cache_root), "ASR__MODEL", "en")
    batch = args.batch_size
    if batch is None:
        out_root.mkdir(parents=True, exist_ok=True)
        batch = stage_device(cached_profile(out_root / "hardware_cache.json"), "asr", args.device).batch_size
    return runs.Side(
        args.device, args.model, choice.path, args.compute_type, batch, cpu_threads(), tuple(args.settings)
    )


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pipeline_qc(job_dir: Path) -> dict[str, Any]:
    path = job_dir / "10_subtitle_gen" / "qc.json"
    if not path.is_file():
        return {}
    qc = json.loads(path.read_text())
    english = qc.get("tracks", {}).get("en", {})
    songs = job_dir / "08_lyrics_detection" / "songs.json"
    return {
        "songs_found": json.loads(songs.read_text()).get("regions", []) if songs.is_file() else None,
        "hard_violations": qc.get("hard_violations"),
        "speech_coverage": qc.get("speech_coverage"),
        "uncovered": qc.get("uncovered", []),
        "en_counts": english.get("counts", {}),
        "path": str(path),
    }


def pipeline_record(run: runs.PipelineRun, film: film_sets.Film) -> dict[str, Any]:
    stages = runs.stage_figures(run.job_dir, run.run)
    asr = stages.get("asr", {})
    return {
        "job_id": run.job_id,
        "job_dir": str(run.job_dir),
        "server": run.server,
        "prepare": run.prepare.summary(),
        "run": run.run.summary(),
        "wall_s": round(run.wall_s, 2),
        "prepare_s": round(run.prepare.wall_s, 2),
        "run_s": round(run.run.wall_s, 2),
        "peak_rss_mb": round(run.peak_rss / 2**20, 1),
        "asr_s": asr.get("duration_s"),
        "asr_decode_s": asr.get("decode_s"),
        "asr_load_s": (asr.get("summary") or {}).get("model_load_s"),
        "orchestrator": runs.orchestrator_figures(run.job_dir, run.run),
        "stages": stages,
        "srt": str(run.srt()) if run.srt() else None,
    }


def cues_of(path: str | Path | None) -> list[scoring.Cue]:
    if not path or not Path(path).is_file():
        return []
    return scoring.parse_srt(Path(path).read_text(encoding="utf-8", errors="replace"))


def truth_summary(film: film_sets.Film) -> dict[str, Any]:
    truth = film.truth
    return {
        "turns": len(truth["turns"]),
        "songs": len(truth["songs"]),
        "names": sum(sum(t["names"].values()) for t in truth["turns"]),
        "voices": sorted({t["voice"] for t in truth["turns"]}),
        "noise": f"{truth['noise']['kind']} {truth['noise']['level']}",
    }


def speed_figures(film: film_sets.Film, pairs: list[dict[str, Any]]) -> dict[str, Any]:
    med = reporting.median
    minutes = film.duration_s / 60
    p = {
        "wall_s": med([x["pipeline"]["wall_s"] for x in pairs]),
        "run_s": med([x["pipeline"]["run_s"] for x in pairs]),
        "prepare_s": med([x["pipeline"]["prepare_s"] for x in pairs]),
        "peak_rss_mb": med([x["pipeline"]["peak_rss_mb"] for x in pairs]),
        "asr_s": med([x["pipeline"]["asr_s"] for x in pairs]),
        "asr_decode_s": med([x["pipeline"]["asr_decode_s"] for x in pairs]),
        "asr_load_s": med([x["pipeline"].get("asr_load_s") for x in pairs]),
    }
    # WhisperX's transcription figure begins after it loaded its model; the stage's includes the load.
    stage_s, load_s = p["asr_s"], p["asr_load_s"]
    p["asr_after_load_s"] = stage_s - load_s if stage_s is not None and load_s is not None else None
    w = {
        "wall_s": med([x["whisperx"]["wall_s"] for x in pairs]),
        "peak_rss_mb": med([x["whisperx"]["peak_rss_mb"] for x in pairs]),
        "transcription_s": med([x["whisperx"]["transcription_s"] for x in pairs]),
    }
    for side in (p, w):
        side["rtf"] = side["wall_s"] / film.duration_s if side["wall_s"] else None
        side["s_per_audio_min"] = side["wall_s"] / minutes if side["wall_s"] else None
    return {
        "pairs": len(pairs),
        "pipeline": p,
        "whisperx": w,
        "ratio_whole": reporting.ratio(p["wall_s"], w["wall_s"]),
        "ratio_asr": reporting.ratio(p["asr_s"], w["transcription_s"]),
        "ratio_asr_after_load": reporting.ratio(p["asr_after_load_s"], w["transcription_s"]),
        "ratio_asr_vs_whisperx_wall": reporting.ratio(p["asr_s"], w["wall_s"]),
    }


def cached_record(job_dir: Path, ran: runs.Measured) -> dict[str, Any]:
    """A cached re-run: each stage's state (all should be `cached`), its memory, where its time went."""
    manifest = json.loads((job_dir / "manifest.json").read_text())
    states = {name: entry.get("state") for name, entry in manifest.get("stages", {}).items()}
    return {
        "wall_s": round(ran.wall_s, 2),
        "peak_rss_mb": round(ran.peak_rss / 2**20, 1),
        "not_cached": sorted(name for name, state in states.items() if state not in ("cached", "skipped")),
        "states": states,
        **runs.orchestrator_figures(job_dir, ran),
    }


def bench_film(
    film: film_sets.Film, side: runs.Side, args: argparse.Namespace, here: Path, server: runs.PrefectServer,
    temporary: bool,
) -> dict[str, Any]:  # fmt: skip
    out_root, logs = here / "out", here / "logs"
    client_home, temp_home = here / "prefect-client", here / "prefect-temporary"
    pairs = []
    for rep in range(args.repeats):
        tag = f"{film.spec.name}.{rep + 1}"
        log(f"{film.spec.name}: pair {rep + 1}/{args.repeats}: pipeline (running server)")
        pipe = runs.run_pipeline(film.path, film.glossary, side, out_root, client_home, server.url, logs, tag,
                                 args.timeout)  # fmt: skip
        record = pipeline_record(pipe, film)
        log(f"  pipeline {record['wall_s']:.1f} s (prepare {record['prepare_s']:.1f} s), "
            f"peak {record['peak_rss_mb']:.0f} MB, job {pipe.job_id}")  # fmt: skip
        log(f"{film.spec.name}: pair {rep + 1}/{args.repeats}: WhisperX CLI")
        wx = runs.run_whisperx(film.path, side, here / "whisperx" / tag, logs, tag, args.timeout)
        wx_record = wx.measured.summary() | {
            "srt": str(wx.srt) if wx.srt else None,
            "transcription_s": wx.transcription_s,
            "peak_rss_mb": round(wx.measured.peak_rss / 2**20, 1),
        }
        log(f"  WhisperX {wx.measured.wall_s:.1f} s (transcription {wx.transcription_s} s), "
            f"peak {wx_record['peak_rss_mb']:.0f} MB")  # fmt: skip
        quality = {
            "pipeline": scoring.score(film.truth, cues_of(record["srt"])),
            "whisperx": scoring.score(film.truth, cues_of(wx_record["srt"])),
        }
        pairs.append({"pipeline": record, "whisperx": wx_record, "quality": quality})
    first = pairs[0]["pipeline"]
    entry: dict[str, Any] = {
        "name": film.spec.name,
        "duration_s": film.duration_s,
        "film": str(film.path),
        "truth": str(film.truth_path),
        "glossary": str(film.glossary),
        "truth_summary": truth_summary(film),
        "songs": [{"start": s["start"], "end": s["end"]} for s in film.truth["songs"]],
        "pairs": pairs,
        "quality": pairs[0]["quality"],
        "pipeline_qc": pipeline_qc(Path(first["job_dir"])),
        "stages": first["stages"],
        "speed": speed_figures(film, pairs),
    }
    first_dir = Path(first["job_dir"])
    log(f"{film.spec.name}: cached re-run of job {first['job_id']}, running server")
    again = runs.rerun_cached(first["job_id"], out_root, client_home, server.url, logs, f"{film.spec.name}.cached")
    entry["cached_rerun"] = {
        "running_server_s": round(again.wall_s, 2),
        "running": cached_record(first_dir, again),
    }
    if temporary:
        log(f"{film.spec.name}: whole run with the temporary server")
        tag = f"{film.spec.name}.temporary"
        temp = runs.run_pipeline(film.path, film.glossary, side, out_root, temp_home, None, logs, tag, args.timeout)
        entry["temporary_server_run"] = {
            "job_id": temp.job_id,
            "job_dir": str(temp.job_dir),
            "wall_s": round(temp.wall_s, 2),
            "run_s": round(temp.run.wall_s, 2),
            "prepare_s": round(temp.prepare.wall_s, 2),
            "peak_rss_mb": round(temp.peak_rss / 2**20, 1),
            **runs.orchestrator_figures(temp.job_dir, temp.run),
            "stages": {k: v.get("duration_s") for k, v in runs.stage_figures(temp.job_dir, temp.run).items()},
        }
        log(f"  {temp.wall_s:.1f} s; cached re-run with the temporary server")
        cached = runs.rerun_cached(temp.job_id, out_root, temp_home, None, logs, f"{tag}.cached")
        entry["cached_rerun"] |= {"temporary_server_s": round(cached.wall_s, 2),
                                  "temporary": cached_record(temp.job_dir, cached)}  # fmt: skip
    return entry


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(runs.ROOT)
    specs = choose_films(args)
    here = args.work / f"run-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    here.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        "work": str(here),
        "command": ["python", "-m", "bench", *(argv if argv is not None else sys.argv[1:])],
        "films": [],
    }
    log(f"films: {', '.join(s.name for s in specs)}; work folder {here}")
    built = []
    for spec in specs:
        t0 = time.perf_counter()
        built.append(film_sets.build(spec, args.work / "films"))
        log(f"film {spec.name}: {built[-1].duration_s:.1f} s ({time.perf_counter() - t0:.1f} s to make or find)")
    side = resolve_side(args, here / "out")
    report["setup"] = {
        "device": side.device, "model": side.model, "model_path": str(side.model_path),
        "compute_type": side.compute_type, "batch_size": side.batch_size, "threads": side.threads,
        "settings": list(side.settings), "cores": os.cpu_count(), "load_start": [round(x, 2) for x in os.getloadavg()],
        "whisperx_cmd": runs.whisperx_cmd(Path("FILM"), side, Path("DIR")),
        "prepare_cmd": runs.prepare_cmd(Path("FILM"), Path("GLOSSARY"), side),
    }  # fmt: skip
    server = runs.PrefectServer(here / "prefect-server", here / "logs" / "prefect-server.log")
    status = 0
    try:
        migrated = runs.migrate(server.home, here / "logs" / "prefect-server.migrate.log")
        log(f"Prefect server: database migrated in {migrated.wall_s:.1f} s; starting it")
        start_s = server.start()
        log(f"Prefect server answers at {server.url} after {start_s:.1f} s")
        report["server"] = {"home": str(server.home), "url": server.url, "start_s": round(start_s, 2),
                            "migrate_s": round(migrated.wall_s, 2)}  # fmt: skip
        if not args.no_temporary_server:
            temp_migrated = runs.migrate(here / "prefect-temporary", here / "logs" / "prefect-temporary.migrate.log")
            report["temporary_home"] = {"home": str(here / "prefect-temporary"),
                                        "migrate_s": round(temp_migrated.wall_s, 2)}  # fmt: skip
        for index, film in enumerate(built):
            entry = bench_film(film, side, args, here, server, temporary=index == 0 and not args.no_temporary_server)
            report["films"].append(entry)
            reporting.write(finish(report, server), args.report)
    except runs.RunFailed as exc:
        log(f"a run failed: {exc}")
        report["failure"] = str(exc)
        status = 1
    finally:
        report = finish(report, server)
        server.stop()
        reporting.write(report, args.report)
    if report["films"]:
        print(reporting.render(report))
    print(f"\nreport: {args.report}; jobs and logs: {here}")
    return status


def finish(report: dict[str, Any], server: runs.PrefectServer) -> dict[str, Any]:
    """The report with its targets computed from the films so far."""
    if "server" in report and server.proc is not None:
        report["server"]["rss_mb_end"] = round(server.rss() / 2**20, 1)
    report["setup"]["load_end"] = [round(x, 2) for x in os.getloadavg()]
    targets = [t for film in report["films"] for t in reporting.film_targets(film)]
    scaling = reporting.scaling_targets(report["films"])
    report["scaling"] = [t.as_dict() for t in scaling]
    report["targets"] = [t.as_dict() for t in [*targets, *scaling]]
    return report
