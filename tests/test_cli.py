"""fastsched-pool, run for real: the console script and ``python -m fastsched`` in subprocesses,
on SQLite and on the MariaDB of tests/conftest.py. A few in-process tests pin the settings rules
(flag > environment > default) without paying for a subprocess each."""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest.mock
from collections.abc import Iterator, Sequence
from pathlib import Path

import pymysql
import pytest

import fastsched
from fastsched import cli, pidfile
from fastsched.cli.options import START_OPTIONS
from fastsched.config import DEFAULT_MAX_DURATION_MINUTES, PoolSettings
from fastsched.dsn import parse_dsn
from fastsched.errors import ConfigError
from fastsched.jobs import JobState
from fastsched.pool import Pool as MasterPool
from fastsched.priority import Priority
from tests.conftest import fail_jobs

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
UNREACHABLE_DSN = "mysql://root:topsecret@127.0.0.1:1/x"
PROCESS_TIMEOUT = 60  # seconds any one CLI run may take
START_TIMEOUT = 30  # seconds for a started pool to write its pidfile
TABLES = {"workerqueue", "process", "fastsched_meta"}


def _declared_script() -> str:
    """pyproject.toml's [project.scripts] fastsched-pool target (read without tomllib: Python 3.10)."""
    text = (REPO / "pyproject.toml").read_text()
    scripts = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    match = re.search(r'^fastsched-pool\s*=\s*"([^"]+)"', scripts, re.MULTILINE)
    assert match, "pyproject.toml declares no fastsched-pool script"
    return match.group(1)


def _script_command() -> list[str]:
    """The installed console script, else its entry point from pyproject.toml run the same way."""
    installed = shutil.which("fastsched-pool", path=os.path.dirname(sys.executable))
    if installed:
        return [installed]
    target = _declared_script()
    module, _, function = target.partition(":")
    return [sys.executable, "-c", f"import sys; from {module} import {function}; sys.exit({function}())"]


LAUNCHERS = {"script": _script_command(), "module": [sys.executable, "-m", "fastsched"]}


@pytest.fixture(scope="module")
def rundir() -> Iterator[str]:
    """A short XDG_RUNTIME_DIR (Unix socket paths are limited to ~107 bytes)."""
    path = tempfile.mkdtemp(prefix="fscli", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def env(rundir: str) -> dict[str, str]:
    """The environment of a CLI run: no FASTSCHED_* setting leaks in from the caller's."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FASTSCHED_") or k == "FASTSCHED_IMPL"}
    # tests/ for --import clijobs: a pool never imports from its working directory.
    clean["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), str(TESTS), os.environ.get("PYTHONPATH")]))
    clean["XDG_RUNTIME_DIR"] = rundir
    return clean


@pytest.fixture
def host_id() -> str:
    return "clitest-" + secrets.token_hex(4)


def run(
    *args: str, env: dict[str, str], cwd: str | Path | None = None, launcher: str = "module"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LAUNCHERS[launcher], *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=PROCESS_TIMEOUT,
        check=False,
    )


def default_pidfile(dsn: str, host_id: str, env: dict[str, str]) -> str:
    """Where a pool run with ``env`` puts its pidfile by default."""
    with unittest.mock.patch.dict(os.environ, {"XDG_RUNTIME_DIR": env["XDG_RUNTIME_DIR"]}):
        return pidfile.default_path(parse_dsn(dsn).identity, host_id)


def tables(dsn: str) -> set[str]:
    parsed = parse_dsn(dsn)
    if parsed.dialect == "sqlite":
        if not os.path.exists(parsed.database):
            return set()
        with sqlite3.connect(parsed.database) as conn:
            return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn = pymysql.connect(host=parsed.host, port=parsed.port, user=parsed.user, password=parsed.password,
                           database=parsed.database)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW TABLES")
            return {row[0] for row in cur.fetchall()}
    finally:
        conn.close()


def drop_tables(dsn: str) -> None:
    parsed = parse_dsn(dsn)
    if parsed.dialect == "sqlite":
        return
    conn = pymysql.connect(host=parsed.host, port=parsed.port, user=parsed.user, password=parsed.password,
                           database=parsed.database, autocommit=True)
    try:
        with conn.cursor() as cur:
            for table in TABLES:
                cur.execute(f"DROP TABLE IF EXISTS `{table}`")
    finally:
        conn.close()


class Pool:
    """A ``fastsched-pool start`` running in the background, its output in files."""

    def __init__(self, args: Sequence[str], env: dict[str, str], tmp_path: Path, launcher: str = "module") -> None:
        self.out_path = tmp_path / f"pool-{secrets.token_hex(3)}.out"
        self.err_path = self.out_path.with_suffix(".err")
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen([*LAUNCHERS[launcher], "start", *args], env=env, cwd=TESTS,
                                         stdout=out, stderr=err, text=True)

    @property
    def output(self) -> str:
        return self.out_path.read_text() + self.err_path.read_text()

    def wait_for_pidfile(self, path: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while pidfile.read_pid(path) != self.proc.pid or not pidfile.is_locked(path):
            if self.proc.poll() is not None:
                pytest.fail(f"the pool exited ({self.proc.returncode}) before writing {path}:\n{self.output}")
            if time.monotonic() > deadline:
                pytest.fail(f"no pidfile at {path} after {START_TIMEOUT} s:\n{self.output}")
            time.sleep(0.05)

    def wait(self, timeout: float = PROCESS_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the pool did not exit in {timeout} s:\n{self.output}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def pools() -> Iterator[list[Pool]]:
    started: list[Pool] = []
    yield started
    for pool in started:
        pool.kill()


# --- help and packaging -------------------------------------------------------------------------


def test_the_commands_are_one_explicit_list_and_their_modules_never_import_the_package() -> None:
    """fastsched.cli lists every Command itself; a command module imports fastsched.cli.common and
    fastsched.cli.options, never the package, so nothing imports in a circle and no command
    registers itself as a side effect of an import."""
    import ast

    from fastsched.cli.common import Command

    assert all(isinstance(command, Command) for command in cli.COMMANDS)
    names = [command.name for command in cli.COMMANDS]
    assert len(names) == len(set(names))
    parser_names = set(cli.build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert parser_names == set(names)
    for path in (REPO / "fastsched" / "cli").glob("*.py"):
        if path.name == "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.module != "fastsched.cli", f"{path.name} imports the fastsched.cli package"
                assert not (node.module == "fastsched" and any(a.name == "cli" for a in node.names)), path.name
            elif isinstance(node, ast.Import):
                assert all(a.name != "fastsched.cli" for a in node.names), f"{path.name} imports fastsched.cli"


def test_console_script_is_declared() -> None:
    assert _declared_script() == "fastsched.cli:main"


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_start_help_names_every_flag_its_env_var_and_default(launcher: str, env: dict[str, str]) -> None:
    result = run("start", "--help", env=env, launcher=launcher)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for option in START_OPTIONS:
        assert option.flag in text
        assert f"env {option.env};" in text, option.env
    for flag in ("--dsn", "--workers", "--import", "--fetch-limit", "--until-empty", "--max-load", "--host-id",
                 "--lease", "--shutdown-grace", "--retry-limit", "--crash-limit", "--retry-delay", "--retention",
                 "--max-duration", "--pidfile", "--http", "--http-token", "--log-format", "--log-level"):
        assert flag in text
    assert "default: the number of CPUs" in text
    assert "5 already running" in text


def test_top_level_help_lists_commands_exit_codes_and_environment(env: dict[str, str]) -> None:
    result = run("--help", env=env)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for word in ("init", "start", "stop", "failed", "retry", "cancel", "purge", "FASTSCHED_FETCH_LIMIT",
                 "0 ok", "2 configuration error", "3 database unreachable", "4 killed", "5 already running"):
        assert word in text


def test_no_command_prints_usage_and_exits_2(env: dict[str, str]) -> None:
    result = run(env=env)
    assert result.returncode == cli.EXIT_CONFIG
    assert "usage:" in result.stderr


def test_stop_help_names_its_flags(env: dict[str, str]) -> None:
    result = run("stop", "--help", env=env)
    assert result.returncode == 0
    for flag in ("--dsn", "--host-id", "--pidfile", "--wait", "--force"):
        assert flag in result.stdout


# --- configuration errors -----------------------------------------------------------------------

BAD_FLAGS = [
    (["--workers", "0"], "--workers", "'0'"),
    (["--workers", "-3"], "--workers", "'-3'"),
    (["--workers", "many"], "--workers", "'many'"),
    (["--fetch-limit", "0"], "--fetch-limit", "'0'"),
    (["--max-load", "-1"], "--max-load", "'-1'"),
    (["--max-load", "nan"], "--max-load", "'nan'"),
    (["--lease", "0"], "--lease", "'0'"),
    (["--lease", "1"], "--lease", "heartbeat"),  # must outlast the heartbeat interval
    (["--lease", "2"], "--lease", "at least 3 s (3 heartbeat intervals of 1 s)"),  # one late beat is no death
    (["--shutdown-grace", "soon"], "--shutdown-grace", "'soon'"),
    (["--retry-limit", "-1"], "--retry-limit", "'-1'"),
    (["--crash-limit", "0"], "--crash-limit", "'0'"),
    (["--retry-delay", "later"], "--retry-delay", "'later'"),
    (["--retention", "x"], "--retention", "'x'"),
    (["--max-duration", "URGENT=5"], "--max-duration", "URGENT"),
    (["--max-duration", "25=5"], "--max-duration", "'25'"),
    (["--max-duration", "HIGH"], "--max-duration", "'HIGH'"),
    (["--max-duration", "HIGH=-5"], "--max-duration", "'-5'"),
    (["--http", "9100"], "--http", "'9100'"),
    (["--http", "0.0.0.0:9100"], "--http", "0.0.0.0:9100"),  # beyond loopback without a token
    (["--log-format", "xml"], "--log-format", "'xml'"),
    (["--log-level", "chatty"], "--log-level", "'chatty'"),
    (["--dsn", "postgres://u@h/db"], "--dsn", "postgres"),
    (["--dsn", "mysql://root:hunter22@db.example"], "--dsn", "mysql://root:***@db.example"),
    (["--host-id", "has space"], "--host-id", "'has space'"),
    (["--import", "no_such_module_for_fastsched"], "--import", "no_such_module_for_fastsched"),
    (["--import", "not-a-module"], "--import", "'not-a-module'"),
]


@pytest.mark.parametrize(("args", "flag", "shown"), BAD_FLAGS, ids=[" ".join(a) for a, _, _ in BAD_FLAGS])
def test_bad_flag_is_a_config_error_and_nothing_happens(
    args: list[str], flag: str, shown: str, env: dict[str, str], tmp_path: Path
) -> None:
    db = tmp_path / "db.sqlite3"
    pid_path = tmp_path / "run" / "pool.pid"
    full = ["start", "--dsn", f"sqlite:///{db}", "--pidfile", str(pid_path), "--until-empty", *args]
    result = run(*full, env=env, cwd=tmp_path)
    assert result.returncode == cli.EXIT_CONFIG, result.stderr
    assert flag in result.stderr and shown in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # one line, no traceback
    assert "hunter22" not in result.stderr
    assert not db.exists() and not pid_path.parent.exists()
    assert result.stdout == ""


BAD_ENV = [
    ("FASTSCHED_WORKERS", "0"),
    ("FASTSCHED_WORKERS", "two"),
    ("FASTSCHED_FETCH_LIMIT", "0"),
    ("FASTSCHED_UNTIL_EMPTY", "perhaps"),
    ("FASTSCHED_MAX_LOAD", "high"),
    ("FASTSCHED_HOST_ID", "a b"),
    ("FASTSCHED_LEASE", "-1"),
    ("FASTSCHED_RETRY_DELAY", "asap"),
    ("FASTSCHED_MAX_DURATION", "HIGH=10,BOGUS=3"),
    ("FASTSCHED_IMPORT", "clijobs,no_such_module_for_fastsched"),
    ("FASTSCHED_DSN", "nonsense"),
    ("FASTSCHED_LOG_LEVEL", "loud"),
]


@pytest.mark.parametrize(("name", "value"), BAD_ENV, ids=[f"{n}={v}" for n, v in BAD_ENV])
def test_bad_environment_value_names_the_variable(
    name: str, value: str, env: dict[str, str], tmp_path: Path
) -> None:
    db = tmp_path / "db.sqlite3"
    env.update({"FASTSCHED_DSN": f"sqlite:///{db}", "FASTSCHED_UNTIL_EMPTY": "1"})
    env.update({name: value, "FASTSCHED_PIDFILE": str(tmp_path / "run" / "pool.pid")})
    result = run("start", env=env, cwd=TESTS)
    assert result.returncode == cli.EXIT_CONFIG, result.stderr
    assert name in result.stderr
    shown = value.split(",")[-1].split("=")[0] if "," in value else value
    assert shown in result.stderr, result.stderr
    assert not db.exists() and not (tmp_path / "run").exists()


def test_import_error_inside_the_module_is_named(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "brokenjobs.py").write_text("raise RuntimeError('half-written module')\n")
    env["PYTHONPATH"] += os.pathsep + str(tmp_path)  # found through the configured path
    result = run("start", "--dsn", f"sqlite:///{tmp_path / 'db.sqlite3'}", "--import", "brokenjobs",
                 "--until-empty", env=env, cwd=tmp_path)
    assert result.returncode == cli.EXIT_CONFIG
    assert "'brokenjobs'" in result.stderr and "half-written module" in result.stderr
    assert "Traceback" not in result.stderr


def test_json_log_format_reports_config_errors_as_json(env: dict[str, str]) -> None:
    result = run("start", "--log-format", "json", "--workers", "0", env=env)
    assert result.returncode == cli.EXIT_CONFIG
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["level"] == "ERROR" and "--workers" in entry["message"] and isinstance(entry["pid"], int)


# --- settings rules, in process -----------------------------------------------------------------


def _settings(argv: list[str], environ: dict[str, str]) -> tuple[object, dict[str, str]]:
    args = cli.build_parser().parse_args(["start", *argv])
    return cli.build_settings(args, environ)


def test_every_setting_has_its_rule_in_one_place_and_the_cli_uses_it() -> None:
    """config.FIELD_CHECKS holds the rule of each PoolSettings field; a flag's parser only reads
    text, so a value the rule refuses is refused by the flag with the rule's own words."""
    import dataclasses

    from fastsched import config

    assert {f.name for f in dataclasses.fields(config.PoolSettings)} == set(config.FIELD_CHECKS)
    config.validate(config.PoolSettings())  # the defaults pass their own rules
    for args, field, value in (
        (["--workers", "0"], "workers", 0),
        (["--retention", "-1"], "retention", -1.0),
        (["--host-id", "a b"], "host_id", "a b"),
    ):
        problem = config.setting_problem(field, value)
        assert problem
        with pytest.raises(ConfigError, match=re.escape(problem)):
            cli.build_settings(cli.build_parser().parse_args(["start", *args]), {})


def test_flag_beats_environment_beats_default() -> None:
    settings, sources = _settings(["--workers", "3"], {"FASTSCHED_WORKERS": "7", "FASTSCHED_FETCH_LIMIT": "4"})
    assert settings.workers == 3 and sources["workers"] == "--workers"  # type: ignore[attr-defined]
    assert settings.fetch_limit == 4 and sources["fetch_limit"] == "FASTSCHED_FETCH_LIMIT"  # type: ignore[attr-defined]
    settings, _ = _settings([], {})
    assert settings.workers == (os.cpu_count() or 1)  # type: ignore[attr-defined]
    assert settings.until_empty is False and settings.imports == ()  # type: ignore[attr-defined]
    assert settings.dsn == parse_dsn("sqlite:///fastsched.sqlite3")  # type: ignore[attr-defined]


def test_every_option_reaches_its_setting() -> None:
    settings, _ = _settings(
        ["--dsn", "mysql://u:pw@db:3307/app", "--workers", "2", "--import", "a.b", "c", "--import", "d",
         "--fetch-limit", "5", "--until-empty", "--max-load", "3.5", "--host-id", "web-1", "--lease", "12",
         "--shutdown-grace", "0", "--retry-limit", "0", "--crash-limit", "1", "--retry-delay", "60",
         "--retention", "10", "--max-duration", "HIGH=5", "--max-duration", "50=0", "--pidfile", "/tmp/x.pid",
         "--http", "127.0.0.1:0", "--http-token", "tok", "--log-format", "json", "--log-level", "debug"],
        {},
    )
    s = settings
    assert (s.dsn.host, s.dsn.port, s.dsn.password, s.workers) == ("db", 3307, "pw", 2)  # type: ignore[attr-defined]
    assert s.imports == ("a.b", "c", "d") and s.fetch_limit == 5 and s.until_empty is True  # type: ignore[attr-defined]
    assert (s.max_load, s.host_id, s.lease, s.shutdown_grace) == (3.5, "web-1", 12.0, 0.0)  # type: ignore[attr-defined]
    assert (s.retry_limit, s.crash_limit, s.retry_delay, s.retention) == (0, 1, "60", 10.0)  # type: ignore[attr-defined]
    expected = {**DEFAULT_MAX_DURATION_MINUTES, Priority.HIGH: 5.0, Priority.NEGLIGIBLE: 0.0}
    assert dict(s.max_duration_minutes) == expected  # type: ignore[attr-defined]
    assert (s.pidfile, s.http, s.http_token) == ("/tmp/x.pid", "127.0.0.1:0", "tok")  # type: ignore[attr-defined]
    assert (s.log_format, s.log_level) == ("json", "DEBUG")  # type: ignore[attr-defined]


def test_environment_twins_reach_their_settings() -> None:
    settings, _ = _settings(["--max-duration", "LOW=1"], {
        "FASTSCHED_IMPORT": "a, b.c", "FASTSCHED_UNTIL_EMPTY": "yes", "FASTSCHED_MAX_DURATION": "LOW=9,HIGH=2",
        "FASTSCHED_HOST_ID": "h2", "FASTSCHED_RETRY_DELAY": "Friendica", "FASTSCHED_HTTP": "[::1]:9100",
    })
    s = settings
    assert s.imports == ("a", "b.c") and s.until_empty is True and s.host_id == "h2"  # type: ignore[attr-defined]
    assert s.max_duration_minutes[Priority.LOW] == 1.0 and s.max_duration_minutes[Priority.HIGH] == 2.0  # type: ignore[attr-defined]
    assert s.retry_delay == "friendica" and s.http == "[::1]:9100"  # type: ignore[attr-defined]
    settings, _ = _settings([], {"FASTSCHED_UNTIL_EMPTY": "0", "FASTSCHED_WORKERS": ""})
    assert settings.until_empty is False  # type: ignore[attr-defined]
    assert settings.workers == (os.cpu_count() or 1)  # type: ignore[attr-defined]  # empty = unset


def test_token_value_is_never_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        _settings(["--http-token", " "], {})
    assert "--http-token" in str(info.value) and "not shown" in str(info.value)


# --- init ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_init_creates_the_schema_idempotently(launcher: str, dsn: str, env: dict[str, str]) -> None:
    drop_tables(dsn)
    assert not TABLES & tables(dsn)
    first = run("init", "--dsn", dsn, env=env, launcher=launcher)
    assert first.returncode == 0, first.stderr
    assert TABLES <= tables(dsn)
    assert str(parse_dsn(dsn)) in first.stdout
    env["FASTSCHED_DSN"] = dsn
    again = run("init", env=env, launcher=launcher)
    assert again.returncode == 0, again.stderr
    assert TABLES <= tables(dsn)


def test_init_unreachable_database_exits_3_without_the_password(env: dict[str, str]) -> None:
    result = run("init", "--dsn", UNREACHABLE_DSN, env=env)
    assert result.returncode == cli.EXIT_DB_UNREACHABLE
    assert "topsecret" not in result.stdout + result.stderr
    assert "unreachable" in result.stderr and len(result.stderr.strip().splitlines()) == 1


# --- start --------------------------------------------------------------------------------------


def _enqueue(dsn: str, command: str, *args: object) -> int:
    import fastsched

    with fastsched.connect(dsn) as queue:
        return queue.add(fastsched.PRIORITY_MEDIUM, command, *args)


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_start_until_empty_runs_the_jobs_and_exits_0(
    launcher: str, dsn: str, env: dict[str, str], host_id: str, tmp_path: Path
) -> None:
    marks = [tmp_path / f"touched-{i}" for i in range(3)]
    for mark in marks:
        _enqueue(dsn, "Touch", str(mark))
    pid_path = tmp_path / "pool.pid"
    result = subprocess.run(
        [*LAUNCHERS[launcher], "start", "--dsn", dsn, "--import", "clijobs", "--until-empty", "--workers", "2",
         "--host-id", host_id, "--pidfile", str(pid_path)],
        env=env, cwd=TESTS, capture_output=True, text=True, timeout=PROCESS_TIMEOUT, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert all(mark.exists() for mark in marks), result.stderr
    assert not pid_path.exists()


def test_start_until_empty_from_the_environment(dsn: str, env: dict[str, str], host_id: str, tmp_path: Path) -> None:
    mark = tmp_path / "touched"
    _enqueue(dsn, "Touch", str(mark))
    env.update({"FASTSCHED_DSN": dsn, "FASTSCHED_IMPORT": "clijobs", "FASTSCHED_UNTIL_EMPTY": "true",
                "FASTSCHED_WORKERS": "1", "FASTSCHED_HOST_ID": host_id})
    result = run("start", env=env, cwd=TESTS)
    assert result.returncode == 0, result.stderr
    assert mark.exists()


@pytest.mark.mysql
def test_a_lease_under_three_heartbeats_is_refused_before_anything_happens(
    mysql_dsn: str, env: dict[str, str], host_id: str, tmp_path: Path
) -> None:
    """A 2 s lease with heartbeats every second would get healthy children killed at every late
    beat (a 2-second job started 13 times in 12 s): refused, by flag, variable and API alike."""
    mark = tmp_path / "touched"
    job_id = _enqueue(mysql_dsn, "Touch", str(mark))
    pid_path = tmp_path / "pool.pid"
    by_flag = run("start", "--dsn", mysql_dsn, "--import", "clijobs", "--until-empty", "--host-id", host_id,
                  "--pidfile", str(pid_path), "--lease", "2", env=env, cwd=TESTS)
    by_variable = run("start", "--dsn", mysql_dsn, "--import", "clijobs", "--until-empty", "--host-id", host_id,
                      "--pidfile", str(pid_path), env={**env, "FASTSCHED_LEASE": "2.5"}, cwd=TESTS)
    for result, named, shown in ((by_flag, "--lease", "'2'"), (by_variable, "FASTSCHED_LEASE", "'2.5'")):
        assert result.returncode == cli.EXIT_CONFIG, result.stderr
        message = result.stderr.strip()
        assert message == (
            f"fastsched-pool: error: {named}: invalid value {shown}: must be at least 3 s (3 heartbeat intervals "
            "of 1 s), or one late heartbeat gets healthy children killed and the master declared dead"
        )
    with pytest.raises(ConfigError, match=r"^lease: invalid value 2\.0: must be at least 3 s"):
        MasterPool(PoolSettings(dsn=parse_dsn(mysql_dsn), lease=2.0, host_id=host_id))
    with fastsched.connect(mysql_dsn) as queue:
        assert queue.get(job_id).state is JobState.WAITING  # nothing claimed, nothing ran
        assert queue.backend.processes() == []  # no master registered
    assert not mark.exists() and not pid_path.exists()
    accepted = run("start", "--dsn", mysql_dsn, "--import", "clijobs", "--until-empty", "--host-id", host_id,
                   "--pidfile", str(pid_path), "--lease", "3", env=env, cwd=TESTS)
    assert accepted.returncode == 0, accepted.stderr
    assert mark.exists()


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_a_module_planted_in_the_working_directory_is_never_imported(
    launcher: str, mysql_dsn: str, env: dict[str, str], host_id: str, tmp_path: Path
) -> None:
    """A pool started in a shared directory where someone planted clijobs.py (the name of the task
    module it imports) and cwdonly.py: it imports the configured clijobs (tests/, on PYTHONPATH),
    runs its job, and imports neither planted file, even when asked for one by name."""
    workdir = tmp_path / "shared"
    workdir.mkdir()
    planted = tmp_path / "planted-was-imported"
    for name in ("clijobs", "cwdonly"):
        (workdir / f"{name}.py").write_text(f"open({str(planted)!r}, 'a').write({name!r})\n")
    mark = tmp_path / "touched"
    _enqueue(mysql_dsn, "Touch", str(mark))
    result = run("start", "--dsn", mysql_dsn, "--import", "clijobs", "--until-empty", "--workers", "1",
                 "--host-id", host_id, "--pidfile", str(tmp_path / "pool.pid"), env=env, cwd=workdir,
                 launcher=launcher)
    assert result.returncode == 0, result.stderr
    assert mark.exists() and not planted.exists()
    refused = run("start", "--dsn", mysql_dsn, "--import", "cwdonly", "--until-empty", "--host-id", host_id,
                  "--pidfile", str(tmp_path / "pool.pid"), env=env, cwd=workdir, launcher=launcher)
    assert refused.returncode == cli.EXIT_CONFIG, refused.stderr
    assert "--import: cannot import module 'cwdonly'" in refused.stderr
    assert "the working directory is not searched" in refused.stderr
    assert not planted.exists()


def test_text_log_lines_carry_the_pid(sqlite_dsn: str, env: dict[str, str], host_id: str, tmp_path: Path) -> None:
    result = run("start", "--dsn", sqlite_dsn, "--until-empty", "--workers", "1", "--host-id", host_id, env=env,
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines
    pattern = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (\d+) [A-Z]+ [\w.]+: ")
    pids = {int(m.group(1)) for m in map(pattern.match, lines) if m}
    assert len(pids) >= 1 and all(pattern.match(line) for line in lines if not line.startswith(" ")), lines


def test_json_log_lines_parse_and_carry_the_pid(
    dsn: str, env: dict[str, str], host_id: str, tmp_path: Path
) -> None:
    _enqueue(dsn, "Touch", str(tmp_path / "touched"))
    env["FASTSCHED_LOG_FORMAT"] = "json"
    result = run("start", "--dsn", dsn, "--import", "clijobs", "--until-empty", "--workers", "1", "--host-id",
                 host_id, "--log-level", "DEBUG", env=env, cwd=TESTS)
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert entries
    for entry in entries:
        assert {"time", "level", "logger", "pid", "message"} <= entry.keys()
        assert isinstance(entry["pid"], int) and entry["pid"] > 0
        dt.datetime.fromisoformat(entry["time"])
    assert any("starting pool" in entry["message"] and entry.get("host_id") == host_id for entry in entries)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_unreachable_database_exits_3_and_never_shows_the_password(
    log_format: str, env: dict[str, str], host_id: str, tmp_path: Path
) -> None:
    # Start-up retries for a few seconds, or the lease if shorter: the shortest lease allowed (three
    # heartbeats) keeps the test short.
    pid_path = tmp_path / "pool.pid"
    result = run("start", "--dsn", UNREACHABLE_DSN, "--host-id", host_id, "--pidfile", str(pid_path), "--lease",
                 "3", "--log-format", log_format, "--log-level", "DEBUG", env=env, cwd=tmp_path)
    assert result.returncode == cli.EXIT_DB_UNREACHABLE, result.stderr
    assert "topsecret" not in result.stdout + result.stderr
    assert "root:***@127.0.0.1:1/x" in result.stderr
    assert "database unreachable" in result.stderr.strip().splitlines()[-1]
    assert not pid_path.exists()
    if log_format == "json":
        for line in result.stderr.splitlines():
            json.loads(line)
    env.update({"FASTSCHED_DSN": UNREACHABLE_DSN, "FASTSCHED_LEASE": "3"})
    again = run("start", "--host-id", host_id, "--pidfile", str(pid_path), env=env, cwd=tmp_path)
    assert again.returncode == cli.EXIT_DB_UNREACHABLE
    assert "topsecret" not in again.stdout + again.stderr


def test_start_gives_up_on_an_unreachable_database_within_seconds(
    env: dict[str, str], host_id: str, tmp_path: Path
) -> None:
    # With the default lease (30 s): start-up fails fast instead of retrying for a whole lease.
    started = time.monotonic()
    result = run("start", "--dsn", UNREACHABLE_DSN, "--host-id", host_id, "--pidfile", str(tmp_path / "pool.pid"),
                 env=env, cwd=tmp_path)
    took = time.monotonic() - started
    assert result.returncode == cli.EXIT_DB_UNREACHABLE, result.stderr
    assert took < 15, f"start took {took:.1f}s to give up"
    assert "topsecret" not in result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("fastsched-pool: error: database unreachable") and "root:***@127.0.0.1:1/x" in last


# --- start in the background, stop --------------------------------------------------------------


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_stop_ends_a_running_pool_cleanly(
    launcher: str, dsn: str, env: dict[str, str], host_id: str, tmp_path: Path, pools: list[Pool]
) -> None:
    pool = Pool(["--dsn", dsn, "--workers", "1", "--host-id", host_id], env, tmp_path, launcher)
    pools.append(pool)
    default_path = default_pidfile(dsn, host_id, env)
    assert default_path.startswith(env["XDG_RUNTIME_DIR"])
    pool.wait_for_pidfile(default_path)
    assert os.stat(default_path).st_mode & 0o777 == 0o600
    assert os.stat(os.path.dirname(default_path)).st_mode & 0o777 == 0o700

    result = run("stop", "--dsn", dsn, "--host-id", host_id, "--wait", "30", env=env, launcher=launcher)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"pid {pool.proc.pid}" in result.stdout and "stopped" in result.stdout
    assert pool.wait() == 0, pool.output
    assert not os.path.exists(default_path)


def test_stop_waits_for_the_running_job(
    dsn: str, env: dict[str, str], host_id: str, tmp_path: Path, pools: list[Pool]
) -> None:
    pid_path = str(tmp_path / "pool.pid")
    job_id = _enqueue(dsn, "Sleep", 1.0)
    pool = Pool(["--dsn", dsn, "--import", "clijobs", "--workers", "1", "--host-id", host_id,
                 "--pidfile", pid_path], env, tmp_path)
    pools.append(pool)
    pool.wait_for_pidfile(pid_path)
    _wait_for_state(dsn, job_id, "running", pool)
    env["FASTSCHED_PIDFILE"] = pid_path
    result = run("stop", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert pool.wait() == 0, pool.output
    assert _state(dsn, job_id) in ("done", None)  # done (or purged)


def test_stop_force_kills_the_running_job_and_exits_4(
    dsn: str, env: dict[str, str], host_id: str, tmp_path: Path, pools: list[Pool]
) -> None:
    pid_path = str(tmp_path / "pool.pid")
    job_id = _enqueue(dsn, "Sleep", 120.0)
    pool = Pool(["--dsn", dsn, "--import", "clijobs", "--workers", "1", "--host-id", host_id,
                 "--pidfile", pid_path], env, tmp_path)
    pools.append(pool)
    pool.wait_for_pidfile(pid_path)
    _wait_for_state(dsn, job_id, "running", pool)
    result = run("stop", "--pidfile", pid_path, "--force", "--wait", "30", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "second SIGTERM" in result.stdout
    assert pool.wait() == cli.EXIT_KILLED, pool.output
    assert _state(dsn, job_id) in ("waiting", "deferred")  # released for another try
    assert not os.path.exists(pid_path)


def test_two_signals_force_the_stop(
    dsn: str, env: dict[str, str], host_id: str, tmp_path: Path, pools: list[Pool]
) -> None:
    pid_path = str(tmp_path / "pool.pid")
    job_id = _enqueue(dsn, "Sleep", 120.0)
    pool = Pool(["--dsn", dsn, "--import", "clijobs", "--workers", "1", "--host-id", host_id,
                 "--pidfile", pid_path], env, tmp_path)
    pools.append(pool)
    pool.wait_for_pidfile(pid_path)
    _wait_for_state(dsn, job_id, "running", pool)
    pool.proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    pool.proc.send_signal(signal.SIGTERM)
    assert pool.wait(30) == cli.EXIT_KILLED, pool.output
    assert not os.path.exists(pid_path)


def _state(dsn: str, job_id: int) -> str | None:
    import fastsched

    with fastsched.connect(dsn) as queue:
        try:
            return str(queue.get(job_id).state.value)
        except fastsched.JobNotFound:
            return None


def _wait_for_state(dsn: str, job_id: int, state: str, pool: Pool) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while _state(dsn, job_id) != state:
        if pool.proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"job {job_id} never became {state}:\n{pool.output}")
        time.sleep(0.1)


def test_second_start_with_the_same_host_id_exits_5(
    dsn: str, env: dict[str, str], host_id: str, tmp_path: Path, pools: list[Pool]
) -> None:
    first = Pool(["--dsn", dsn, "--workers", "1", "--host-id", host_id], env, tmp_path)
    pools.append(first)
    path = default_pidfile(dsn, host_id, env)
    first.wait_for_pidfile(path)
    second = run("start", "--dsn", dsn, "--workers", "1", "--host-id", host_id, env=env, cwd=tmp_path)
    assert second.returncode == cli.EXIT_ALREADY_RUNNING, second.stderr
    assert "already running" in second.stderr and f"pid {first.proc.pid}" in second.stderr
    assert pidfile.read_pid(path) == first.proc.pid  # the first pool's file is untouched
    assert first.proc.poll() is None
    assert run("stop", "--dsn", dsn, "--host-id", host_id, env=env).returncode == 0
    assert first.wait() == 0, first.output


def test_a_stale_pidfile_is_taken_over(sqlite_dsn: str, env: dict[str, str], host_id: str, tmp_path: Path) -> None:
    pid_path = tmp_path / "pool.pid"
    pid_path.write_text("999999\n")  # no such process, and nobody holds the lock
    result = run("start", "--dsn", sqlite_dsn, "--until-empty", "--workers", "1", "--host-id", host_id,
                 "--pidfile", str(pid_path), env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not pid_path.exists()


def test_an_unusable_pidfile_path_is_a_config_error(sqlite_dsn: str, env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "plain-file").write_text("")
    result = run("start", "--dsn", sqlite_dsn, "--until-empty", "--pidfile", str(tmp_path / "plain-file" / "x.pid"),
                 env=env, cwd=tmp_path)
    assert result.returncode == cli.EXIT_CONFIG, result.stderr
    assert "--pidfile" in result.stderr and "plain-file" in result.stderr and "Traceback" not in result.stderr


def test_stop_without_a_pool_exits_1(env: dict[str, str], tmp_path: Path, host_id: str) -> None:
    result = run("stop", "--pidfile", str(tmp_path / "none.pid"), env=env)
    assert result.returncode == cli.EXIT_FAILURE
    assert "no pool is running" in result.stderr and "none.pid" in result.stderr
    stale = tmp_path / "stale.pid"
    stale.write_text("999999\n")
    result = run("stop", "--pidfile", str(stale), env=env)
    assert result.returncode == cli.EXIT_FAILURE
    assert "stale" in result.stderr and "999999" in result.stderr
    result = run("stop", "--dsn", UNREACHABLE_DSN, "--host-id", host_id, env=env)
    assert result.returncode == cli.EXIT_FAILURE
    assert "topsecret" not in result.stdout + result.stderr
    assert run("stop", "--pidfile", str(stale), "--wait", "soon", env=env).returncode == cli.EXIT_CONFIG


# --- failed, retry, cancel, purge ---------------------------------------------------------------


def _fail(dsn: str, job_id: int, error: str) -> None:
    import fastsched
    from fastsched.queue import utcnow

    with fastsched.connect(dsn) as queue:
        assert fail_jobs(queue.backend, [job_id], error, utcnow()) == 1


def test_failed_retry_cancel_purge(dsn: str, env: dict[str, str], tmp_path: Path) -> None:
    env["FASTSCHED_DSN"] = dsn
    assert run("failed", env=env).stdout.strip() == "no failed jobs"
    first = _enqueue(dsn, "Touch", str(tmp_path / "a"))
    second = _enqueue(dsn, "Touch", str(tmp_path / "b"))
    _fail(dsn, first, "boom: disk full")
    _fail(dsn, second, "boom again")

    listed = run("failed", env=env)
    assert listed.returncode == 0, listed.stderr
    assert f"#{first} Touch" in listed.stdout and "disk full" in listed.stdout and "2 failed jobs" in listed.stdout

    retried = run("retry", str(first), env=env)
    assert retried.returncode == 0, retried.stderr
    assert f"#{first}" in retried.stdout and "back in the queue" in retried.stdout
    assert _state(dsn, first) == "waiting"
    not_failed = run("retry", str(first), env=env)
    assert not_failed.returncode == cli.EXIT_FAILURE and not_failed.stderr

    cancelled = run("cancel", str(first), env=env)
    assert cancelled.returncode == 0 and f"#{first}" in cancelled.stdout and "waiting" in cancelled.stdout
    assert _state(dsn, first) is None
    missing = run("cancel", str(first), env=env)
    assert missing.returncode == cli.EXIT_FAILURE and str(first) in missing.stderr
    assert run("cancel", "abc", env=env).returncode == cli.EXIT_CONFIG

    assert "1 failed job put back" in run("retry", "--all", env=env).stdout
    _fail(dsn, second, "boom, the third")
    kept = run("purge", "--older-than", "0", env=env)
    assert kept.returncode == 0 and "purged 0 done jobs" in kept.stdout
    purged = run("purge", "--older-than", "0", "--include-failed", env=env)
    assert purged.returncode == 0 and "purged 1 done, failed and cancelled job " in purged.stdout
    assert _state(dsn, second) is None
