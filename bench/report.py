#!/usr/bin/env python3
"""Run the benchmarks and regenerate bench/RESULTS.md: one command.

    python bench/report.py            # full sizes (several minutes), then RESULTS.md
    python bench/report.py --quick    # the CI sizes (about a minute): a smoke test of the report
    python bench/report.py --from-json run.json   # re-render from an earlier --benchmark-json
    python bench/report.py -- -k drain            # pass arguments through to pytest

RESULTS.md lists the machine (CPU model, cores, memory, MariaDB version and durability settings,
SQLite, Python, which core was loaded), a summary of every target (met or missed, and by how
much), then each benchmark's figures, ratios and tables, from the ``extra_info`` the benchmarks
record (bench/harness.py). Benchmarks that record nothing in that shape (bench/test_bench_core.py)
are listed with their timings and whatever extra_info they carry.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_OUTPUT = BENCH_DIR / "RESULTS.md"
sys.path.insert(0, str(REPO_ROOT))

# Sections in this order; anything else follows under its module name.
SECTIONS = (
    ("test_bench_core.py", "1. Core: compiled vs reference"),
    ("test_bench_enqueue.py", "2. Enqueue"),
    ("test_bench_drain.py", "3. Drain, end to end"),
    ("test_bench_latency.py", "4. Latency"),
    ("test_bench_depth.py", "5. Depth"),
    ("test_bench_memory.py", "6. Memory"),
    ("test_bench_fairness.py", "7. Fairness"),
    ("test_bench_mixed.py", "8. Mixed load"),
    ("test_bench_peers.py", "9. Peers (optional)"),
    ("test_bench_async.py", "10. Enqueue from asyncio"),
)
BAR_WIDTH = 40  # characters of the longest bar in a chart


# ------------------------------------------------------------------------------- machine


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {}
    cpuinfo = _read("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    info["CPU"] = models[0] if models else platform.processor() or platform.machine()
    info["cores (logical)"] = os.cpu_count()
    try:
        info["cores usable (affinity)"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    mem = [line for line in _read("/proc/meminfo").splitlines() if line.startswith("MemTotal")]
    if mem:
        info["memory"] = f"{int(mem[0].split()[1]) / 1024 / 1024:.1f} GiB"
    info["kernel"] = platform.release()
    info["Python"] = f"{platform.python_implementation()} {platform.python_version()}"
    info["SQLite"] = sqlite3.sqlite_version
    try:
        from bench import harness

        server = harness.mysql_server_info()
        info["MariaDB"] = server.pop("version")
        for key, value in server.items():
            info[f"MariaDB {key}"] = value
    except Exception as exc:  # noqa: BLE001 - the report still renders without the server
        info["MariaDB"] = f"unreachable ({exc})"
    try:
        from fastsched import core

        info["fastsched.core.IMPLEMENTATION"] = core.IMPLEMENTATION
    except Exception as exc:  # noqa: BLE001
        info["fastsched.core.IMPLEMENTATION"] = f"import failed ({exc})"
    info["FASTSCHED_IMPL"] = os.environ.get("FASTSCHED_IMPL", "(unset)")
    try:
        import pytest_benchmark

        info["pytest-benchmark"] = pytest_benchmark.__version__
    except ImportError:
        pass
    return info


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=False).stdout.strip()
        return commit + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# ------------------------------------------------------------------------------- running


def run_pytest(json_path: Path, junit_path: Path, quick: bool, extra: list[str]) -> int:
    env = dict(os.environ)
    if quick:
        env["FASTSCHED_BENCH_QUICK"] = "1"
    else:
        env.pop("FASTSCHED_BENCH_QUICK", None)
    argv = [
        sys.executable, "-m", "pytest", "bench/", f"--benchmark-json={json_path}", f"--junitxml={junit_path}",
        "-p", "no:cacheprovider", "-q", "--benchmark-disable-gc", "-o", "timeout=3600", *extra,
    ]
    print("$", " ".join(argv), flush=True)
    return subprocess.call(argv, cwd=REPO_ROOT, env=env)


def failures(junit_path: Path) -> list[tuple[str, str]]:
    """(test id, first line of the failure) for every failed or erroring test."""
    if not junit_path.exists():
        return []
    found = []
    for case in ET.parse(junit_path).getroot().iter("testcase"):
        for tag in ("failure", "error"):
            node = case.find(tag)
            if node is not None:
                lines = [line.strip() for line in (node.get("message") or node.text or tag).splitlines()]
                message = " / ".join(line for line in lines if line)
                found.append((f"{case.get('classname')}::{case.get('name')}", message[:600]))
    return found


# ------------------------------------------------------------------------------- rendering


def fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return "–"
        magnitude = abs(value)
        if magnitude >= 1000:
            return f"{value:,.0f}"
        if magnitude >= 100:
            return f"{value:.1f}"
        if magnitude >= 10:
            return f"{value:.2f}"
        if magnitude >= 0.01 or magnitude == 0:
            return f"{value:.3f}"
        return f"{value:.2e}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def md_table(columns: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(fmt(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return lines


def verdict(target: dict[str, Any]) -> str:
    if target["met"]:
        return "**met**"
    value, goal, op = target.get("value"), target.get("goal"), target.get("op")
    if value is None or goal in (None, 0):
        return "**MISSED**"
    if op == ">=":
        return f"**MISSED** ({value / goal:.2f}× of the goal, {1 - value / goal:.0%} short)"
    return f"**MISSED** ({value / goal:.2f}× the limit)"


def bar_chart(columns: list[str], rows: list[list[Any]], label_col: int, value_col: int) -> list[str]:
    values = [row[value_col] for row in rows if isinstance(row[value_col], (int, float))]
    if not values:
        return []
    top = max(values) or 1
    lines = ["```", f"{columns[label_col]:>12}  {columns[value_col]}"]
    for row in rows:
        value = row[value_col]
        if not isinstance(value, (int, float)) or (isinstance(value, float) and math.isnan(value)):
            continue
        lines.append(f"{fmt(row[label_col]):>12}  {'█' * max(1, round(BAR_WIDTH * value / top))} {fmt(value)}")
    lines.append("```")
    return lines


def section_of(fullname: str) -> str:
    module = fullname.split("::")[0].rsplit("/", 1)[-1]
    for name, title in SECTIONS:
        if module == name:
            return title
    return module


def render_benchmark(bench: dict[str, Any]) -> list[str]:
    info = bench.get("extra_info") or {}
    stats = bench.get("stats") or {}
    lines = [f"### {info.get('title') or bench['name']}", "", f"`{bench['fullname']}`", ""]
    if "figures" not in info:  # not in the harness's shape: timings and raw extra_info
        rows = [["mean", stats.get("mean")], ["min", stats.get("min")], ["rounds", stats.get("rounds")]]
        rows += [[k, v] for k, v in info.items() if not isinstance(v, (dict, list))]
        return lines + md_table(["", "value (s for times)"], rows) + [""]
    figures = info.get("figures", {})
    if figures:
        lines += md_table(["figure", "value"], [[k.replace("_", " "), v] for k, v in figures.items()]) + [""]
    for target in info.get("targets", []):
        lines.append(
            f"- Target: {target['name']} {target['op']} {fmt(target['goal'])} {target['unit']}: "
            f"measured {fmt(target['value'])} {target['unit']} → {verdict(target)}"
        )
    if info.get("targets"):
        lines.append("")
    for name, tab in (info.get("tables") or {}).items():
        lines += [f"**{name}**", ""] + md_table(tab["columns"], tab["rows"]) + [""]
        if name == "curve" and tab["rows"]:
            lines += bar_chart(tab["columns"], tab["rows"], 0, 2) + [""]
        if name.startswith("workers per priority over time"):
            lines += shares_chart(tab["columns"], tab["rows"]) + [""]
    for note in info.get("notes", []):
        lines.append(f"> {note}")
    if info.get("notes"):
        lines.append("")
    return lines


def shares_chart(columns: list[str], rows: list[list[Any]]) -> list[str]:
    """One line per time bin: the workers of each priority as letters (H, M, N...), one per worker."""
    letters = [c[0] for c in columns[1:]]
    lines = ["```", "t (s)   " + "  ".join(f"{l}={c}" for l, c in zip(letters, columns[1:]))]
    for row in rows:
        cells = "".join(letter * round(v or 0) for letter, v in zip(letters, row[1:]))
        lines.append(f"{row[0]:>5.1f}   {cells}")
    lines.append("```")
    return lines


def core_rows(benchmarks: list[dict[str, Any]]) -> tuple[list[list[Any]], list[dict[str, Any]]]:
    """bench/test_bench_core.py's results as (function, size, c median, python median, speedup)
    rows. No target: per-function speedups are bound by creating Python objects, which both twins
    must do; what the compiled core is judged by is the master's CPU per job in a drain, compiled
    vs twin (bench 3)."""
    medians: dict[tuple[str, int], dict[str, float]] = {}
    for bench in benchmarks:
        info = bench.get("extra_info") or {}
        if "function" in info and "implementation" in info:
            key = (info["function"], int(info["size"]))
            medians.setdefault(key, {})[info["implementation"]] = (bench.get("stats") or {}).get("median")
    rows: list[list[Any]] = []
    for (function, size), pair in sorted(medians.items()):
        c, py = pair.get("c"), pair.get("python")
        speedup = py / c if c and py else None
        rows.append([function, size, c * 1e6 if c else None, py * 1e6 if py else None, speedup])
    return rows, []


def render(data: dict[str, Any], machine: dict[str, Any], meta: dict[str, Any], failed: list[tuple[str, str]]) -> str:
    benchmarks = data.get("benchmarks", [])
    core_table, core_targets = core_rows(benchmarks)
    lines = [
        "# fastsched benchmark results",
        "",
        (f"Generated by `{meta['command']}` on {meta['date']} at commit {meta['commit']}, "
        f"in {meta['mode']} mode ({meta['duration']}). Regenerate with `python bench/report.py`."),
        "",
        ("Figures from one run on a shared 2-core machine: other work on it shows up as noise "
        f"(load average {meta['load_before']} before the run, {meta['load_after']} after)."),
        "",
        "## Machine",
        "",
    ]
    lines += md_table(["", ""], [[k, v] for k, v in machine.items()]) + [""]

    lines += ["## Targets", ""]
    target_rows = []
    for target in core_targets:
        target_rows.append([
            "Core", target["name"], f">= {fmt(target['goal'])} x", f"{fmt(target['value'])} x", verdict(target)
        ])
    for bench in benchmarks:
        for target in (bench.get("extra_info") or {}).get("targets", []):
            target_rows.append([
                section_of(bench["fullname"]).split(" ", 1)[-1], target["name"],
                f"{target['op']} {fmt(target['goal'])} {target['unit']}",
                f"{fmt(target['value'])} {target['unit']}", verdict(target),
            ])
    if target_rows:
        met = sum(1 for t in core_targets if t["met"]) + sum(
            1 for b in benchmarks for t in (b.get("extra_info") or {}).get("targets", []) if t["met"]
        )
        lines.append(f"{met} of {len(target_rows)} targets met.")
        lines.append("")
        lines += md_table(["benchmark", "target", "goal", "measured", "verdict"], target_rows) + [""]
    else:
        lines += ["No target was recorded.", ""]
    if failed:
        lines += ["## Benchmarks that failed", ""]
        lines += [f"- `{name}`: {message}" for name, message in failed] + [""]

    by_section: dict[str, list[dict[str, Any]]] = {}
    for bench in benchmarks:
        by_section.setdefault(section_of(bench["fullname"]), []).append(bench)
    order = [title for _, title in SECTIONS] + sorted(set(by_section) - {t for _, t in SECTIONS})
    for title in order:
        if title not in by_section:
            continue
        lines += [f"## {title}", ""]
        if title == SECTIONS[0][1] and core_table:
            lines += [("Median time per call batch (µs) of each core function, compiled (c) and reference "
                      "(python), from bench/test_bench_core.py. No target here: what the compiled core is "
                      "judged by is the master's CPU per job in a drain, compiled vs twin (section 3)."), ""]
            lines += md_table(["function", "size", "c median µs", "python median µs", "speedup"], core_table)
            lines += [""] + [f"- Target: {t['name']} >= {fmt(t['goal'])}x: measured {fmt(t['value'])}x → "
                             f"{verdict(t)}" for t in core_targets] + [""]
            continue
        for bench in sorted(by_section[title], key=lambda b: b["fullname"]):
            lines += render_benchmark(bench)
    return "\n".join(lines).rstrip() + "\n"


def _load() -> str:
    try:
        return ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI sizes (FASTSCHED_BENCH_QUICK=1)")
    parser.add_argument("--from-json", type=Path, help="render an existing --benchmark-json file, run nothing")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="default: bench/RESULTS.md")
    parser.add_argument("--keep-json", type=Path, help="also keep the benchmark JSON here")
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    args = parser.parse_args(argv)

    started = time.monotonic()
    load_before = _load()
    failed: list[tuple[str, str]] = []
    code = 0
    if args.from_json:
        json_path = args.from_json
        mode = "re-rendered"
    else:
        tmp = Path(tempfile.mkdtemp(prefix="fastsched-bench-"))
        json_path = args.keep_json or tmp / "benchmarks.json"
        junit = tmp / "junit.xml"
        code = run_pytest(json_path, junit, args.quick, args.pytest_args)
        failed = failures(junit)
        mode = "quick" if args.quick else "full"
    try:
        data = json.loads(json_path.read_text())
    except (OSError, ValueError) as exc:
        if args.from_json:
            print(f"cannot read {json_path}: {exc}", file=sys.stderr)
            return 1
        data = {"benchmarks": []}  # every benchmark failed: the report says which and why
        failed = failed or [("pytest", f"no benchmark results (exit code {code}): {exc}")]
    minutes, seconds = divmod(int(time.monotonic() - started), 60)
    command = "python bench/report.py" + (" --quick" if args.quick else "")
    meta = {
        "command": command,
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "commit": git_commit(),
        "mode": mode,
        "duration": f"{minutes} min {seconds} s" if not args.from_json else "not re-run",
        "load_before": load_before,
        "load_after": _load(),
    }
    args.output.write_text(render(data, machine_info(), meta, failed))
    print(f"wrote {args.output}" + (f" ({len(failed)} benchmark(s) failed)" if failed else ""))
    return code


if __name__ == "__main__":
    sys.exit(main())
