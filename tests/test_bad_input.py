"""Bad input, generated: ``add``, ``add_many``, ``connect`` and the CLI's flags either succeed or
raise one clear error naming the problem (short, whatever the input's size), and store nothing
then. And rows written straight into the table, malformed (broken or too deeply nested JSON,
unknown priorities, unregistered commands, huge parameters), are failed with a reason by a pool
that never crashes on them. On the real MariaDB.

tests/test_queue.py has the producer API's own properties; these add hostile values (subclasses,
huge or deep ones, text that looks like SQL), the exact index in add_many's message, the DSN's
options and the CLI.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import io
import json
import math
import os
import string
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faultkit import PoolProc, connect_raw, record_figures, sql
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import fastsched
from fastsched import cli
from fastsched.cli.options import START_OPTIONS
from fastsched.errors import ConfigError, DatabaseError, InvalidInput
from fastsched.pool import Pool

MAX_MESSAGE = 400  # characters: an error message stays short whatever the size of the bad value
FIELDS = ("priority", "option", "created", "delay", "command", "args", "force_priority", "dedup")
SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


TALLY: collections.Counter[str] = collections.Counter()  # what the generated inputs did, per test


@pytest.fixture(scope="module", autouse=True)
def _tally(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Record how many generated inputs each test tried, and how many of them were refused."""
    yield
    if TALLY:
        record_figures(tmp_path_factory.getbasetemp() / "bad-input", dict(sorted(TALLY.items())), "bad input")


@pytest.fixture
def q(mysql_dsn: str) -> Iterator[fastsched.Queue]:
    with fastsched.connect(mysql_dsn) as queue:
        queue.add(30, "Existing", 1)
        yield queue


@pytest.fixture
def raw(mysql_dsn: str) -> Iterator[Any]:
    """One plain connection to the test database (a new connection per look would cost more than the test)."""
    conn = connect_raw(mysql_dsn)
    yield conn
    conn.close()


def table_state(conn: Any) -> tuple[Any, ...]:
    """Everything stored, in one value (CHECKSUM TABLE covers every column of every row)."""
    with conn.cursor() as cur:
        cur.execute("SELECT COUNT(*), COALESCE(MAX(id), 0) FROM workerqueue")
        counts = cur.fetchone()
        cur.execute("CHECKSUM TABLE workerqueue")
        return counts, cur.fetchone()[1]


def assert_clear(exc: BaseException) -> None:
    message = str(exc)
    assert message and len(message) <= MAX_MESSAGE, f"{len(message)} characters: {message[:200]}..."
    assert any(field in message for field in FIELDS) or message.startswith("jobs"), message


# --- hostile values -----------------------------------------------------------------------------


class Level(int):
    """An int subclass: a priority given as one is still a priority."""


class Name(str):
    """A str subclass: a command given as one is still a command."""


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


SQL_TEXT = st.sampled_from(
    [
        "'; DROP TABLE workerqueue; --",
        "\\'",
        '"',
        "`",
        "%s",
        "%(id)s",
        "{ids}",
        "?",
        "\x00",
        "\\",
        "/*",
        "*/",
        "1 OR 1=1",
        "é\u2028😀",
        "\r\n",
        "' OR ''='",
    ]
)
# Valid JSON values that look hostile (SQL, control characters, extremes), and values that are not.
json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | SQL_TEXT
    | st.sampled_from([-(2**64), Level(30), Name("x"), -0.0, 1e308, 10**300])
)
bad_leaves = (
    st.sampled_from([b"\x00", {1, 2}, dt.date(2030, 1, 1), math.nan, math.inf, "lone \udc80"])
    # Built, not sampled: hypothesis shows sampled values with repr(), which these refuse. (Deeply
    # nested args have a test of their own: hypothesis cannot print them.)
    | st.builds(BadRepr)
    | st.builds(lambda: 10**5000)
)


def _nest(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4) | SQL_TEXT, inner, max_size=3)
        ),
        max_leaves=10,
    )


# Mostly storable (so that verbatim storage is tried as often as refusal), sometimes not.
args_values = st.one_of(_nest(json_leaves), _nest(json_leaves), _nest(json_leaves | bad_leaves))
commands = (
    st.from_regex(r"[A-Za-z0-9_.:/-]{1,100}", fullmatch=True)
    | st.from_regex(r"[A-Za-z0-9_.:/-]{1,100}", fullmatch=True)
    | st.text(max_size=120)
    | SQL_TEXT
    | st.sampled_from([Name("Good"), "x" * 10**6, "os.system", "C" * 100, "C" * 101, 5, None, b"Cmd"])
)
priorities = (
    st.sampled_from([10, 20, 30, 40, 50, Level(20)])
    | st.sampled_from([10, 20, 30, 40, 50, Level(20), Level(35), True, 30.0, "30", None, 10**30, -10])
    | st.integers(-100, 300)
    | st.builds(BadRepr)
    | st.builds(lambda: 10**5000)
)
options = st.fixed_dictionaries(
    {},
    optional={
        "priority": priorities,
        "delay": st.integers(-5, 10**20)
        | st.floats()
        | st.timedeltas()
        | st.just(dt.datetime.max)
        | SQL_TEXT,
        "created": st.datetimes(min_value=dt.datetime(1, 1, 1)) | st.integers() | st.just("2030-01-01"),
        "force_priority": st.booleans() | st.sampled_from([0, 1, "yes", None]),
        "dedup": st.booleans() | st.sampled_from([0, None]),
    },
)
firsts = st.one_of(  # weighted towards valid: storing hostile args verbatim is half of what is tried
    st.sampled_from([10, 20, 30, 40, 50]),
    st.sampled_from([10, 20, 30, 40, 50]),
    options,
    options,
    priorities,
    options.map(lambda o: {**o, "x" * 1000: 1}) | options.map(lambda o: {**o, "prio": 1}),
)


@SETTINGS
@given(first=firsts, command=commands, args=st.lists(args_values, max_size=4))
@example(first=30, command="x" * 10**6, args=[])
@example(first={"x" * 10**5: 1}, command="Cmd", args=[])
def test_add_succeeds_or_names_the_problem_and_stores_nothing(
    q: fastsched.Queue, raw: Any, first: Any, command: Any, args: list[Any]
) -> None:
    before = table_state(raw)
    try:
        job_id = q.add(first, command, *args)
    except InvalidInput as exc:
        TALLY["add refused"] += 1
        assert_clear(exc)
        assert table_state(raw) == before
        return
    TALLY["add stored"] += 1
    job = q.get(job_id)
    assert job.command == command and job.priority in (10, 20, 30, 40, 50)
    assert job.args == json.loads(fastsched.queue.canonical_parameter(args))  # stored verbatim


@pytest.mark.parametrize("depth", [10, 5_000, 100_000])
def test_deeply_nested_args_are_refused_or_stored(q: fastsched.Queue, raw: Any, depth: int) -> None:
    before = table_state(raw)
    try:
        job_id = q.add(30, "Deep", _nested(depth))
    except InvalidInput as exc:
        assert "nested too deeply" in str(exc)
        assert table_state(raw) == before
        return
    assert depth < 1000 and q.get(job_id).parameter == "[" * (depth + 2) + "]" * (depth + 2)


@SETTINGS
@given(jobs=st.lists(st.tuples(firsts, commands, args_values), min_size=1, max_size=6), bad=st.integers(0, 5))
def test_add_many_names_the_first_bad_job_by_index_and_stores_nothing(
    q: fastsched.Queue, raw: Any, jobs: list[tuple[Any, ...]], bad: int
) -> None:
    jobs = list(jobs)
    jobs.insert(min(bad, len(jobs)), (30, "has space"))  # one job is certainly invalid
    first_bad = None
    for index, job in enumerate(jobs):
        try:
            q._new_job(job[0], job[1], job[2:], dt.datetime(2030, 1, 1))
        except InvalidInput:
            first_bad = index
            break
    before = table_state(raw)
    with pytest.raises(InvalidInput) as info:
        q.add_many(jobs)
    TALLY["add_many refused, naming the index"] += 1
    assert str(info.value).startswith(f"jobs[{first_bad}]: "), str(info.value)[:200]
    assert_clear(info.value)
    assert table_state(raw) == before


def test_add_many_from_an_iterator_that_breaks_stores_nothing(q: fastsched.Queue, raw: Any) -> None:
    def jobs() -> Iterator[tuple[Any, ...]]:
        yield (30, "Good", 1)
        yield (30, "Good", 2)
        raise OSError("the producer's own source failed")

    before = table_state(raw)
    with pytest.raises(OSError, match="own source failed"):  # the caller's error, untouched
        q.add_many(jobs())
    assert table_state(raw) == before


# --- connect ------------------------------------------------------------------------------------

PASSWORD_ALPHABET = (
    string.ascii_letters.replace("Z", "").replace("q", "") + string.digits + "@:/?#%&=+ !'\"\\"
)
dsn_options = st.lists(
    st.tuples(
        st.sampled_from(
            ["connect_timeout", "read_timeout", "write_timeout", "unix_socket", "password", "bogus", ""]
        ),
        st.sampled_from(["0", "-1", "nan", "inf", "1e9", "abc", "", "0.5", "3", "/nonexistent/sock"]),
    ),
    max_size=3,
)


@settings(max_examples=100, deadline=None)
@given(
    scheme=st.sampled_from(["mysql", "mariadb", "MySQL", "mysql", "postgres", "sqlite", "", "mysql:"]),
    user=st.from_regex(r"[a-z]{1,8}", fullmatch=True)
    | st.text(alphabet=string.ascii_lowercase + "@:%", max_size=8),
    secret=st.text(alphabet=PASSWORD_ALPHABET, min_size=4, max_size=12),
    host=st.sampled_from(["127.0.0.1", "127.0.0.1", "localhost", "[::1]", "", "::1"]),
    port=st.sampled_from([":real", ":real", ":real", "", ":1", ":0", ":70000", ":-1", ":abc"]),
    database=st.from_regex(r"[a-z]{1,8}", fullmatch=True)
    | st.text(alphabet=string.ascii_lowercase + "/@#?%", max_size=10),
    options=st.just([]) | dsn_options,
    encode=st.booleans(),
)
@example(
    scheme="mysql",
    user="root",
    secret="Zqsecret",
    host="127.0.0.1",
    port=":real",
    database="fsx",
    options=[("connect_timeout", "0")],
    encode=True,
)
@example(
    scheme="mysql",
    user="root",
    secret="Zqsecret",
    host="127.0.0.1",
    port=":real",
    database="fsx",
    options=[("read_timeout", "inf")],
    encode=True,
)
def test_connect_succeeds_or_raises_a_fastsched_error_without_the_password(
    scheme: str,
    user: str,
    secret: str,
    host: str,
    port: str,
    database: str,
    options: list[tuple[str, str]],
    encode: bool,
) -> None:
    password = "Zq" + secret  # "Zq" appears nowhere else in the DSN: any "Zq..." in a message is a leak
    if port == ":real":
        port = ":" + os.environ.get("FASTSCHED_TEST_MYSQL", "mysql://root@127.0.0.1:3306").rsplit(":", 1)[1]
    shown = urllib.parse.quote(password, safe="") if encode else password
    query = ("?" + "&".join(f"{k}={v}" for k, v in options)) if options else ""
    text = f"{scheme}://{user}:{shown}@{host}{port}/{database}{query}"
    try:
        queue = fastsched.connect(text)
    except (ConfigError, DatabaseError) as exc:
        TALLY[f"connect {type(exc).__name__}"] += 1
        message = f"{exc} {exc!r}"
        assert message.strip() and len(str(exc)) <= 2 * MAX_MESSAGE
        assert "Zq" not in message, message
        return
    TALLY["connect opened"] += 1
    queue.close()  # only a reachable server and database get here


def test_bad_mysql_dsn_options_are_config_errors_naming_the_option(mysql_dsn: str) -> None:
    """pymysql raises a bare ValueError (OverflowError for inf) for these: fastsched says which option."""
    for option, value in [
        ("connect_timeout", "0"),
        ("connect_timeout", "nan"),
        ("read_timeout", "-1"),
        ("write_timeout", "inf"),
        ("connect_timeout", "1e9"),
    ]:
        with pytest.raises(ConfigError, match=f"MySQL DSN option '{option}' must be a number of seconds"):
            fastsched.connect(f"{mysql_dsn}?{option}={value}")


# --- the CLI ------------------------------------------------------------------------------------

flag_text = st.text(max_size=30) | st.sampled_from(
    [
        "0",
        "-1",
        "1",
        "nan",
        "inf",
        "-inf",
        "1e309",
        " 5 ",
        "10**9",
        "HIGH=1",
        "HIGH=-1",
        "=",
        "99=5",
        "x:1",
        "[::1]:80",
        "0.0.0.0:9100",
        "127.0.0.1:70000",
        "friendica",
        "json",
        "DEBUG",
        "mysql://u:Zqpass@127.0.0.1:1/db",
        "sqlite:///:memory:",
        "os.path",
        "a..b",
        "1e-300",
        "\x00",
        "١٢",
    ]
)
# --import only names a module here (start imports it later); flags without a value go by the environment.
VALUE_OPTIONS = [o for o in START_OPTIONS if o.kind != "flag"]


@settings(max_examples=300, deadline=None)
@given(option=st.sampled_from(START_OPTIONS), value=flag_text, from_env=st.booleans())
@example(option=next(o for o in START_OPTIONS if o.field == "http_token"), value="Zqtoken x", from_env=False)
def test_every_start_flag_and_variable_is_parsed_or_refused_by_name(
    option: Any, value: str, from_env: bool
) -> None:
    if option.kind == "flag":
        from_env = True
    argv = ["start"] if from_env else ["start", f"{option.flag}={value}"]
    environ = {option.env: value} if from_env else {}
    assume("\x00" not in value or not from_env)  # an environment variable cannot hold NUL
    try:
        args = cli.build_parser().parse_args(argv)
        built, _ = cli.build_settings(args, environ)
        Pool(built)  # the pool's own checks (e.g. the heartbeat against the lease)
    except ConfigError as exc:
        TALLY["start option refused"] += 1
        message = str(exc)
        named = option.env if from_env else option.flag
        assert message.startswith(named) or option.field in message or "--http" in message, message
        if option.secret or option.field == "dsn":
            assert "Zq" not in message.replace("Zq***", ""), message
        return
    except SystemExit as exc:  # argparse said why on stderr, exit code 2
        TALLY["start option refused"] += 1
        assert exc.code == 2
        return
    TALLY["start option accepted"] += 1


@pytest.mark.parametrize("command", ["cancel", "retry", "purge"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=flag_text | st.sampled_from(["1; DROP TABLE workerqueue", "99999999999999999999", "٣", "0x10"]))
def test_job_commands_change_nothing_on_bad_input(mysql_dsn: str, raw: Any, command: str, value: str) -> None:
    assume("\x00" not in value)
    with fastsched.connect(mysql_dsn) as queue:
        queue.add(30, "Waiting", 1)
    argv = [command, "--dsn", mysql_dsn] + (["--older-than", value] if command == "purge" else ["--", value])
    before = table_state(raw)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    assert "Traceback" not in err.getvalue()
    TALLY[f"{command} {'ok' if code == cli.EXIT_OK else 'refused'}"] += 1
    if code != cli.EXIT_OK:
        assert code in (cli.EXIT_FAILURE, cli.EXIT_CONFIG), (code, err.getvalue())
        assert err.getvalue().strip(), "an error without a message"
        assert table_state(raw) == before


# --- malformed rows, written straight into the table ---------------------------------------------

HUGE = 15 * 1024 * 1024  # bytes: just under what MEDIUMTEXT holds


def test_malformed_rows_are_failed_with_a_reason_and_the_master_lives(mysql_dsn: str, tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    with fastsched.connect(mysql_dsn) as queue:
        good = queue.add_many(
            [(p, "fault.rec", str(runs_dir), i) for i, p in enumerate([10, 20, 30, 40, 50] * 4)]
        )
    big_args = "[" + ",".join(["1"] * (HUGE // 2)) + "]"
    malformed = {
        # (command, parameter, priority): the reason it must be failed with
        ("fault.rec", "[1,", 30): "parameter is not valid JSON",
        ("fault.rec", '{"a": 1}', 30): "parameter must be a JSON array of args, got dict",
        ("fault.rec", '"text"', 20): "parameter must be a JSON array of args, got str",
        ("fault.rec", "null", 10): "parameter must be a JSON array of args, got NoneType",
        ("fault.rec", "", 30): "parameter is not valid JSON",
        ("fault.rec", "[NaN]", 30): "do not match the task's signature",
        ("fault.rec", "[" * 200_000 + "]" * 200_000, 30): "parameter is not valid JSON",
        ("fault.rec", big_args, 30): "do not match the task's signature",
        ("fault.rec", "[" + "x" * HUGE, 30): "parameter is not valid JSON",
        ("fault.rec", "[1]", 0): "malformed priority",
        ("fault.rec", "[2]", 35): "malformed priority",
        ("fault.rec", "[3]", 255): "malformed priority",
        ("fault.rec", "[4]", 9): "malformed priority",
        ("os.system", '["touch /tmp/fastsched-pwned"]', 30): "unknown command: os.system",
        ("builtins.eval", '["1+1"]', 10): "unknown command: builtins.eval",
        ("", "[]", 30): "unknown command: ",
        ("Nope'; DROP TABLE workerqueue; --", "[]", 30): "unknown command: Nope'; DROP TABLE workerqueue; --",
        ("x" * 100, "[]", 50): "unknown command: " + "x" * 100,
    }
    conn = connect_raw(mysql_dsn, max_allowed_packet=64 * 1024 * 1024)
    ids = {}
    with conn, conn.cursor() as cur:
        for key in malformed:
            cur.execute(
                "INSERT INTO workerqueue (command, parameter, priority, created, next_try) "
                "VALUES (%s, %s, %s, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))",
                key,
            )
            ids[cur.lastrowid] = key
    started = dt.datetime.now()
    with PoolProc(
        # --retry-limit 0: an unknown command is handed back for another pool only while retries are left
        mysql_dsn, tmp_path, "--workers", "2", "--fetch-limit", "5", "--until-empty", "--crash-limit", "1",
        "--retry-limit", "0",
    ) as pool:
        code = pool.wait(120)
        log = pool.log
    assert code == 0, log[-4000:]
    assert "pool stopped: " in log
    rows = {
        row[0]: row[1:] for row in sql(mysql_dsn, "SELECT id, done, crashes, last_error FROM workerqueue")
    }
    for job_id, key in ids.items():
        done, crashes, error = rows[job_id]
        assert done == 2 and crashes == 0, (
            key[0][:40],
            key[1][:40],
            key[2],
            done,
            crashes,
            (error or "")[:200],
        )
        assert error.startswith(malformed[key]) or malformed[key] in error[:300], (key[1][:40], error[:300])
    assert all(rows[job_id][0] == 1 for job_id in good)
    assert not os.path.exists("/tmp/fastsched-pwned")
    record_figures(
        tmp_path,
        {
            "malformed_rows": len(malformed),
            "good_rows": len(good),
            "child_crashes": 0,
            "seconds": round((dt.datetime.now() - started).total_seconds(), 1),
        },
    )
