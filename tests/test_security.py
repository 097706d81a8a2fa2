"""Security, by trying: rows naming commands that are not registered (``os.system``,
``builtins.eval``, an importable module's function) never run and never import anything; the DSN
password shows nowhere (logs while the database fails, every command's output and errors, the
dashboard, ``/metrics``, ``/status.json``); SQL metacharacters in args are stored and passed on
verbatim; the HTTP endpoints listen on loopback unless a token guards them; the pidfile and the
wake-up socket are private, even under umask 0 and in a runtime directory someone else prepared.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pymysql
import pytest
from faultkit import (
    PoolProc,
    connect_raw,
    job_states,
    pool_env,
    record_figures,
    short_tempdir,
    sql,
    wait_until,
)

import fastsched
from fastsched import tasks, wakeup
from fastsched.dsn import parse_dsn

CANARY = "fscanary"  # a module the pools could import: importing it leaves a mark
NOBODY = 65534  # the uid of "another user" who prepares a hostile runtime directory


# --- unregistered commands ----------------------------------------------------------------------


def test_unregistered_commands_never_run_and_never_import(mysql_dsn: str, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    canary_dir = tmp_path / "importable"
    canary_dir.mkdir()
    (canary_dir / f"{CANARY}.py").write_text(
        f"open({str(marks / 'imported')!r}, 'w').close()\n"
        f"def boom(*args):\n    open({str(marks / 'called')!r}, 'w').close()\n"
    )
    touch = f"touch {marks / 'shell'}"
    rows = {  # command -> args: each would do harm if anything resolved the command by name
        "os.system": [touch],
        "builtins.eval": [f"open({str(marks / 'eval')!r}, 'w')"],
        "builtins.exec": [f"open({str(marks / 'exec')!r}, 'w')"],
        "subprocess.run": [["touch", str(marks / "subprocess")]],
        "posix.system": [touch],
        "importlib.import_module": [CANARY],
        f"{CANARY}.boom": [],
        f"{CANARY}:boom": [],
        CANARY: [],
        "faultkit.rec": [str(marks), 1],  # a registered task's function, by its dotted path
        "fastsched.child_process.os._exit": [3],
        "__import__": [CANARY],
        f"__import__('{CANARY}').boom()": [],  # only a direct INSERT can store these
        "os.system('touch x')": [],
        "../../../etc/passwd": [],
    }
    ids = {}
    fastsched.connect(mysql_dsn).close()  # the schema
    conn = connect_raw(mysql_dsn)
    with conn, conn.cursor() as cur:
        for command, args in rows.items():
            cur.execute(
                "INSERT INTO workerqueue (command, parameter, priority, created, next_try) "
                "VALUES (%s, %s, 20, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))",
                (command, json.dumps(args)),
            )
            ids[command] = cur.lastrowid
    before = set(sys.modules)
    assert all(tasks.get(command) is None for command in rows)  # the registry looks names up, nothing more
    assert set(sys.modules) == before
    env = pool_env(short_tempdir())
    env["PYTHONPATH"] = f"{canary_dir}{os.pathsep}{env['PYTHONPATH']}"
    # --retry-limit 0: handed back for another pool only while retries are left, so failed at once
    with PoolProc(mysql_dsn, tmp_path, "--workers", "2", "--until-empty", "--retry-limit", "0", env=env) as pool:
        code = pool.wait(60)
        log = pool.log
    assert code == 0, log[-3000:]
    errors = dict(sql(mysql_dsn, "SELECT command, last_error FROM workerqueue WHERE done = 2"))
    assert set(errors) == set(rows), log[-3000:]
    for command in rows:
        assert f"last error: unknown command: {command} (" in errors[command], errors[command]
    assert list(marks.iterdir()) == [], "an unregistered command ran or imported something"
    record_figures(tmp_path, {"unregistered_commands": len(rows), "ran": 0, "imported": 0})


# --- SQL metacharacters -------------------------------------------------------------------------

TRICKY = [
    "'; DROP TABLE workerqueue; --",
    "\\'; DROP TABLE workerqueue; --",
    '"; DELETE FROM process; --',
    "`x`",
    "%s",
    "%(id)s",
    "%%",
    "{ids}",
    "{}",
    "?",
    ":name",
    "$1",
    "\x00",
    "\\",
    "\\\\'",
    "/* */",
    "-- ",
    "#",
    "1 OR 1=1",
    "' OR ''='",
    "é😀\u2028\u2029\r\n\t",
    "\x1a",
    "0x27",
    "CHAR(39)",
    "a" * 1000 + "'",
]


def test_sql_metacharacters_in_args_are_stored_and_passed_on_verbatim(mysql_dsn: str, tmp_path: Path) -> None:
    echo = tmp_path / "echo.jsonl"
    with fastsched.connect(mysql_dsn) as queue:
        one = {queue.add(30, "fault.echo", str(echo), text, i): [text, i] for i, text in enumerate(TRICKY)}
        many = queue.add_many([(20, "fault.echo", str(echo), {text: [text]}, "many") for text in TRICKY])
        nested = dict(zip(many, ([{text: [text]}, "many"] for text in TRICKY)))
        for job_id, args in {**one, **nested}.items():
            assert queue.get(job_id).args == [str(echo), *args]
    with PoolProc(mysql_dsn, tmp_path, "--workers", "2", "--fetch-limit", "5", "--until-empty") as pool:
        assert pool.wait(60) == 0, pool.tail()
    lines = [line for line in echo.read_text().split("\n") if line]  # not splitlines(): args hold U+2028
    seen = {entry["id"]: entry["args"] for entry in map(json.loads, lines)}
    assert seen == {job_id: args for job_id, args in {**one, **nested}.items()}
    tables = {row[0] for row in sql(mysql_dsn, "SHOW TABLES")}
    assert {"workerqueue", "process", "fastsched_meta"} <= tables
    assert job_states(mysql_dsn) == {"pending": 0, "done": 2 * len(TRICKY), "failed": 0}


# --- the password -------------------------------------------------------------------------------


@pytest.fixture
def user_dsn(mysql_dsn: str) -> Iterator[tuple[str, str]]:
    """A MariaDB user with a password, owning the test database: (its DSN, the password)."""
    root = parse_dsn(mysql_dsn)
    user = "fs_sec_" + secrets.token_hex(3)
    password = "Pw_" + secrets.token_hex(8) + "'%@:/"
    admin = connect_raw(mysql_dsn)
    with admin.cursor() as cur:
        cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, password))
        cur.execute(f"GRANT ALL ON `{root.database}`.* TO %s@'%%'", (user,))
    quoted = urllib.parse.quote(password, safe="")
    try:
        yield f"mysql://{user}:{quoted}@{root.host}:{root.port}/{root.database}", password
    finally:
        with admin.cursor() as cur:
            cur.execute("DROP USER IF EXISTS %s@'%%'", (user,))
        admin.close()


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _http_url(pool: PoolProc) -> str:
    pool.wait_for_log("http: serving the dashboard at")
    match = re.search(r"serving the dashboard at (http://[^ ,\"]+?)/?[ ,\"]", pool.log)
    assert match, pool.tail()
    return match.group(1).rstrip("/")


def _kill_connections(mysql_dsn: str, user: str) -> int:
    """KILL every connection of ``user``: the pool and its dashboard lose theirs mid-work."""
    killed = 0
    for (thread,) in sql(mysql_dsn, "SELECT id FROM information_schema.processlist WHERE user = %s", (user,)):
        try:
            sql(mysql_dsn, f"KILL CONNECTION {int(thread)}")
            killed += 1
        except pymysql.MySQLError:
            pass  # gone already
    return killed


def test_the_password_shows_nowhere_even_when_things_fail(
    user_dsn: tuple[str, str], mysql_dsn: str, tmp_path: Path
) -> None:
    dsn, password = user_dsn
    user = parse_dsn(dsn).user
    wrong = "Wr0ng_" + secrets.token_hex(6)
    wrong_dsn = dsn.replace(urllib.parse.quote(password, safe=""), wrong)
    secrets_ = [password, urllib.parse.quote(password, safe=""), wrong]
    outputs: dict[str, str] = {}
    with fastsched.connect(dsn) as queue:
        queue.add_many([(30, "fault.rec", str(tmp_path), i, 20.0) for i in range(100)])
        failing = queue.add(20, "fault.echo", 5)  # its first arg is no path: the task raises
    # The DSN in the flags (it shows in ps: the variable is the recommended way, but neither may leak).
    with PoolProc(
        dsn,
        tmp_path,
        "--workers",
        "2",
        "--http",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--log-level",
        "DEBUG",
        "--retry-limit",
        "0",
    ) as pool:
        pool.started()
        url = _http_url(pool)
        kills = 0
        for _ in range(3):  # the database drops the pool's connections: errors, reconnections
            time.sleep(0.5)
            kills += _kill_connections(mysql_dsn, user)
        for path in ("/", "/status.json", "/metrics", "/history.json", "/static/dashboard.js"):
            code, body = _get(url + path)
            outputs[f"GET {path} ({code})"] = body.decode(errors="replace")
        wait_until(lambda: job_states(dsn)["pending"] == 0, 60, "the jobs to finish")
        env = {**pool_env(pool.rundir), "FASTSCHED_DSN": dsn}
        for args in (
            ["status"],
            ["status", "--json"],
            ["explain", str(failing)],
            ["failed"],
            ["init"],
            ["retry", str(failing)],
            ["cancel", str(failing)],
            ["purge", "--older-than", "0"],
        ):
            done = subprocess.run(
                [sys.executable, "-m", "fastsched", *args],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            outputs[" ".join(args)] = f"{done.returncode}\n{done.stdout}\n{done.stderr}"
        assert pool.stop() == 0, pool.tail()
        outputs["pool log"] = pool.log
    # Errors: a wrong password, an unreachable server, a missing database; by flag and by variable.
    env = pool_env(short_tempdir())
    for name, text in (
        ("wrong password", wrong_dsn),
        ("unreachable", dsn.replace(f":{parse_dsn(dsn).port}/", ":1/")),
        ("no database", dsn.rsplit("/", 1)[0] + "/fs_missing_db"),
    ):
        for args, extra in (
            (["status", "--dsn", text], {}),
            (["status"], {"FASTSCHED_DSN": text}),
            (["start", "--dsn", text, "--lease", "3", "--log-level", "DEBUG"], {}),
        ):
            done = subprocess.run(
                [sys.executable, "-m", "fastsched", *args],
                env={**env, **extra},
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode != 0
            outputs[f"{name}: {args[0]}"] = done.stdout + done.stderr
        try:
            fastsched.connect(text)
        except fastsched.FastschedError as exc:
            outputs[f"{name}: connect()"] = f"{exc} {exc!r} {exc.__cause__!r}"
    outputs["stored errors"] = json.dumps(sql(mysql_dsn, "SELECT last_error FROM workerqueue"))
    leaks = [where for where, text in outputs.items() if any(secret in text for secret in secrets_)]
    assert not leaks, f"the password shows in: {leaks}"
    assert kills >= 1 and (
        "connection dropped" in outputs["pool log"] or "database error" in outputs["pool log"]
    )
    assert any('"level": "DEBUG"' in line for line in outputs["pool log"].splitlines())
    record_figures(tmp_path, {"outputs_searched": len(outputs), "connections_killed": kills, "leaks": 0})


# --- the HTTP endpoints -------------------------------------------------------------------------


def _listening(pid: int) -> list[tuple[str, int]]:
    return [
        c.laddr[:2]
        for c in psutil.Process(pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]


def _outward_address() -> str | None:
    """This host's address on its way out (no packet is sent), if it has one beyond loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            address = str(probe.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_http_listens_on_loopback_only_unless_a_token_guards_it(sqlite_dsn: str, tmp_path: Path) -> None:
    with PoolProc(sqlite_dsn, tmp_path, "--workers", "1") as plain:
        plain.started()
        assert _listening(plain.pid) == [], "a pool without --http listens on a TCP port"
    with PoolProc(sqlite_dsn, tmp_path, "--workers", "1", "--http", "127.0.0.1:0") as local:
        url = _http_url(local)
        assert [host for host, _ in _listening(local.pid)] == ["127.0.0.1"]
        assert _get(url + "/metrics")[0] == 200
        assert _get(url + "/metrics", {"Host": "attacker.example"})[0] == 403  # DNS rebinding
    refused = subprocess.run(
        [sys.executable, "-m", "fastsched", "start", "--dsn", sqlite_dsn, "--http", "0.0.0.0:0"],
        env=pool_env(short_tempdir()),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2 and "--http-token" in refused.stderr
    token = "Tk_" + secrets.token_hex(12)
    env = {**pool_env(short_tempdir()), "FASTSCHED_HTTP_TOKEN": token}
    with PoolProc(sqlite_dsn, tmp_path, "--workers", "1", "--http", "0.0.0.0:0", env=env) as public:
        url = _http_url(public)
        port = int(url.rsplit(":", 1)[1])
        assert [host for host, _ in _listening(public.pid)] == ["0.0.0.0"]
        outward = _outward_address() or "127.0.0.1"
        base = f"http://{outward}:{port}"
        assert _get(base + "/metrics")[0] == 401
        assert _get(base + "/status.json", {"Authorization": "Bearer wrong"})[0] == 401
        assert _get(base + "/status.json", {"Authorization": f"Bearer {token}"})[0] == 200
        public.stop()
        assert token not in public.log
    record_figures(tmp_path, {"outward_address_tried": outward != "127.0.0.1"})


# --- the pidfile and the wake-up socket ---------------------------------------------------------


def _mode(path: str | Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _socket_dir(runtime: str, identity: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where a pool whose XDG_RUNTIME_DIR is ``runtime`` puts its socket (and default pidfile)."""
    with monkeypatch.context() as patch:
        patch.setenv("XDG_RUNTIME_DIR", runtime)
        return Path(wakeup.socket_dir(identity))


def test_pidfile_and_socket_are_private_even_under_umask_0(
    sqlite_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rundir = short_tempdir()
    with PoolProc(
        sqlite_dsn, tmp_path, "--workers", "1", rundir=rundir, pidfile=False, preexec_fn=lambda: os.umask(0)
    ) as pool:
        pool.started()
        sockets = _socket_dir(rundir, parse_dsn(sqlite_dsn).identity, monkeypatch)
        wait_until(lambda: any(sockets.glob("*.sock")), 10, "the wake-up socket")
        (sock,) = sockets.glob("*.sock")
        (pid_path,) = sockets.glob("*.pid")
        assert _mode(sockets.parent) == 0o700 and _mode(sockets) == 0o700
        assert _mode(sock) == 0o600 and _mode(pid_path) == 0o600
        assert stat.S_ISSOCK(os.lstat(sock).st_mode) and int(pid_path.read_text()) == pool.pid
        assert pool.stop() == 0


def _hostile_runtime(identity: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """A world-writable runtime directory (like /tmp) where another user has made the fastsched
    directories before us, world-writable and theirs: (the runtime directory, the socket directory)."""
    base = short_tempdir()
    os.chmod(base, 0o1777)
    sockets = _socket_dir(base, identity, monkeypatch)
    for directory in (sockets.parent, sockets):
        directory.mkdir(mode=0o777)
        os.chmod(directory, 0o777)
        os.chown(directory, NOBODY, NOBODY)
    return base, sockets


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to play the other user")
def test_a_runtime_directory_prepared_by_another_user_is_refused(
    sqlite_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    identity = parse_dsn(sqlite_dsn).identity
    victim = tmp_path / "precious"
    victim.write_text("precious\n")
    os.chmod(victim, 0o644)
    base, sockets = _hostile_runtime(identity, monkeypatch)
    host = "fault-hostile"
    os.symlink(victim, sockets / f"{host}.pid")  # the other user's trap: our pidfile is their symlink
    with PoolProc(
        sqlite_dsn, tmp_path, "--workers", "1", "--until-empty", host_id=host, rundir=base, pidfile=False
    ) as pool:
        code = pool.wait(30)
        log = pool.log
    assert victim.read_text() == "precious\n" and _mode(victim) == 0o644, "the pool wrote through the symlink"
    assert code != 0 and f"{sockets.parent} belongs to another user" in log, log[-2000:]
    # With its pidfile somewhere safe, the pool runs, but puts no socket in the other user's directory.
    with PoolProc(sqlite_dsn, tmp_path, "--workers", "1", rundir=base) as pool:
        pool.started()
        assert not list(sockets.glob("*.sock")), "a wake-up socket in a directory another user controls"
        assert pool.stop() == 0
        assert "no wake-up socket" in pool.log
