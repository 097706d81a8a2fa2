"""DSN parsing: the schemes, the defaults, malformed input, and the password kept out of sight."""
from __future__ import annotations

import os
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastsched.dsn import DEFAULT_DSN, DSN, parse_dsn
from fastsched.errors import ConfigError, FastschedError

SECRET = "topsecret"


@pytest.mark.parametrize("scheme", ["mysql", "mariadb", "MySQL", "MARIADB"])
def test_mysql_schemes_parse_to_the_mysql_dialect(scheme: str) -> None:
    dsn = parse_dsn(f"{scheme}://app:{SECRET}@db.example:3307/jobs")
    assert dsn.dialect == "mysql"
    assert (dsn.user, dsn.password, dsn.host, dsn.port, dsn.database) == ("app", SECRET, "db.example", 3307, "jobs")


def test_mysql_port_defaults_to_3306_and_user_and_password_are_optional() -> None:
    dsn = parse_dsn("mysql://db/jobs")
    assert (dsn.user, dsn.password, dsn.host, dsn.port) == ("", "", "db", 3306)
    assert str(dsn) == "mysql://db:3306/jobs"


def test_percent_encoded_password_and_user_are_decoded() -> None:
    dsn = parse_dsn("mysql://us%40er:p%40ss%2Fw%23rd%3F@h/db")
    assert dsn.user == "us@er"
    assert dsn.password == "p@ss/w#rd?"


def test_options_are_kept_in_order() -> None:
    dsn = parse_dsn("mysql://u@h/db?charset=utf8mb4&connect_timeout=5")
    assert dsn.options == (("charset", "utf8mb4"), ("connect_timeout", "5"))


def test_ipv6_host() -> None:
    dsn = parse_dsn("mysql://u:pw@[::1]:3306/db")
    assert dsn.host == "::1"
    assert str(dsn) == "mysql://u:***@[::1]:3306/db"


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("sqlite:///fastsched.sqlite3", "fastsched.sqlite3"),
        ("sqlite:///data/jobs.db", "data/jobs.db"),
        ("sqlite:////var/lib/jobs.db", "/var/lib/jobs.db"),
        ("SQLITE:///a%20b.db", "a b.db"),
    ],
)
def test_sqlite_paths(text: str, path: str) -> None:
    dsn = parse_dsn(text)
    assert dsn.dialect == "sqlite"
    assert dsn.database == path
    assert dsn.identity == "sqlite:" + os.path.abspath(path)


def test_default_is_the_environment_then_a_local_sqlite_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FASTSCHED_DSN", raising=False)
    assert parse_dsn(None) == parse_dsn(DEFAULT_DSN) == DSN("sqlite", database="fastsched.sqlite3")
    monkeypatch.setenv("FASTSCHED_DSN", "mysql://u@h/from_env")
    assert parse_dsn().database == "from_env"
    monkeypatch.setenv("FASTSCHED_DSN", "")
    assert parse_dsn().dialect == "sqlite"


def test_a_parsed_dsn_passes_through() -> None:
    dsn = parse_dsn("mysql://u@h/db")
    assert parse_dsn(dsn) is dsn


def test_identity_names_the_database_without_secrets() -> None:
    a = parse_dsn(f"mysql://u:{SECRET}@H:3306/db")
    b = parse_dsn("mariadb://other:pw@h/db")
    assert a.identity == b.identity == "mysql:h:3306/db"
    assert SECRET not in a.identity


# --- the password never shows ----------------------------------------------------------------


def test_password_is_masked_in_str_repr_and_masked() -> None:
    dsn = parse_dsn(f"mysql://app:{SECRET}@h:3306/db")
    for text in (str(dsn), repr(dsn), dsn.masked(), f"{dsn}", f"{dsn!r}", str([dsn])):
        assert SECRET not in text
        assert "***" in text
    assert str(dsn) == "mysql://app:***@h:3306/db"


def test_password_options_are_masked() -> None:
    dsn = parse_dsn(f"mysql://u@h/db?password={SECRET}&charset=utf8mb4")
    assert SECRET not in str(dsn) and SECRET not in repr(dsn)
    assert str(dsn) == "mysql://u@h:3306/db?password=***&charset=utf8mb4"


@pytest.mark.parametrize(
    "text",
    [
        f"mysql://u:{SECRET}@h:0/db",
        f"mysql://u:{SECRET}@h:70000/db",
        f"mysql://u:{SECRET}@h:port/db",
        f"mysql://u:{SECRET}@h",
        f"mysql://u:{SECRET}@h/",
        f"mysql://u:{SECRET}@/db",
        f"mysql://u:{SECRET}@h/a/b",
        f"mysql://u:12/{SECRET}@h/db",  # an unencoded / in the password
        f"mysql://u:12/{SECRET}@h",  # ... that would otherwise parse, with the rest as the database
        f"mysql://u:pa#{SECRET}@h/db",  # an unencoded #
        f"mysql://u:pa?{SECRET}@h/db",  # an unencoded ?
        f"postgres://u:{SECRET}@h/db",
        f"u:{SECRET}@h://db",  # no scheme at all, a password before the first ://
        f"u:{SECRET}@h/db",
    ],
)
def test_malformed_dsns_raise_config_error_without_the_password(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_dsn(text)
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value)
    assert info.value.__cause__ is None or SECRET not in str(info.value.__cause__)
    assert isinstance(info.value, ValueError) and isinstance(info.value, FastschedError)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "malformed DSN"),
        ("localhost", "malformed DSN"),
        ("://h/db", "malformed DSN"),
        ("postgres://u@h/db", "unsupported DSN scheme 'postgres'"),
        ("mysql://u@h:0/db", "port must be a number from 1 to 65535"),
        ("mysql://u@h:99999/db", "port must be a number from 1 to 65535"),
        ("mysql://u@h:x/db", "port must be a number from 1 to 65535"),
        ("mysql://u@/db", "the host is missing"),
        ("mysql://u@h", "the database name is missing"),
        ("mysql://u@h/a/b", "contains '/'"),
        ("mysql://u@h/db#x", "percent-encode #"),
        ("sqlite://", "the file path is missing"),
        ("sqlite:///", "the file path is missing"),
        ("sqlite://relative.db", "sqlite:///relative/path"),
        ("sqlite:///:memory:", "use a file path"),
        ("sqlite:///jobs.db?mode=ro", "takes no options"),
    ],
)
def test_malformed_dsn_messages(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("?", r"\?")):
        parse_dsn(text)


@pytest.mark.parametrize("value", [42, b"mysql://u@h/db", ["sqlite:///x"]])
def test_a_dsn_must_be_text(value: object) -> None:
    with pytest.raises(ConfigError, match="dsn must be a string"):
        parse_dsn(value)  # type: ignore[arg-type]


# --- properties --------------------------------------------------------------------------------

_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=12)
# What the MySQL driver can send as a password: Latin-1 (another character is a ConfigError, below).
_passwords = st.text(st.characters(codec="latin-1"), min_size=4, max_size=20)
_beyond_latin1 = st.characters(codec="utf-8", exclude_categories=("Cs",)).filter(lambda c: ord(c) > 255)


@given(user=_names, password=_passwords, database=_names.filter(lambda s: "/" not in s and "@" not in s),
       port=st.integers(1, 65535))
def test_any_encoded_password_round_trips_and_never_shows(user: str, password: str, database: str, port: int) -> None:
    q = urllib.parse.quote
    text = f"mysql://{q(user, safe='')}:{q(password, safe='')}@db.example:{port}/{q(database, safe='')}"
    dsn = parse_dsn(text)
    assert (dsn.user, dsn.password, dsn.port, dsn.database) == (user, password, port, database)
    masked = dsn.masked()
    assert masked == f"mysql://{q(user, safe='')}:***@db.example:{port}/{q(database, safe='')}"
    assert repr(dsn) == f"DSN({masked!r})" and str(dsn) == masked
    # The masked form is a valid DSN naming the same database.
    again = parse_dsn(masked)
    assert (again.user, again.host, again.port, again.database) == (user, "db.example", port, database)
    assert again.identity == dsn.identity


@given(st.text(max_size=60))
def test_arbitrary_text_parses_or_raises_config_error(text: str) -> None:
    try:
        dsn = parse_dsn(text)
    except ConfigError:
        return
    assert dsn.dialect in ("mysql", "sqlite")
    assert parse_dsn(dsn.masked()).identity == dsn.identity


def test_a_dsn_may_name_several_nodes_of_a_cluster() -> None:
    dsn = parse_dsn(f"mysql://app:{SECRET}@db1:3307,DB2,[::1]:3308/jobs?connect_timeout=3")
    assert dsn.nodes == (("db1", 3307), ("db2", 3306), ("::1", 3308))
    assert (dsn.host, dsn.port, dsn.user, dsn.password, dsn.database) == ("db1", 3307, "app", SECRET, "jobs")
    assert str(dsn) == "mysql://app:***@db1:3307,db2:3306,[::1]:3308/jobs?connect_timeout=3"
    assert parse_dsn(str(dsn).replace("***", SECRET)) == dsn
    assert SECRET not in repr(dsn)
    one = dsn.at_node(1)
    assert (one.host, one.port, one.nodes, one.password, one.options) == ("db2", 3306, (("db2", 3306),), SECRET, dsn.options)


def test_the_nodes_of_a_cluster_in_any_order_name_one_database() -> None:
    a = parse_dsn("mysql://u@h1:3306,h2:3306,h3:3306/db")
    b = parse_dsn("mysql://v:pw@h3,h1,h2/db")
    assert a.identity == b.identity != parse_dsn("mysql://u@h1:3306/db").identity
    assert parse_dsn("mysql://u@h1/db").nodes == (("h1", 3306),)


def test_a_comma_in_the_password_is_not_a_list_of_nodes() -> None:
    dsn = parse_dsn("mysql://u:a%2Cb,c@h1:3306/db")
    assert (dsn.password, dsn.nodes) == ("a,b,c", (("h1", 3306),))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mysql://u@h1,,h2/db", "an empty host in the list of nodes"),
        ("mysql://u@h1,/db", "an empty host in the list of nodes"),
        ("mysql://u@h1:3306,H1/db", "a node appears twice"),
        ("mysql://u@h1,h2:70000/db", "the port must be a number"),
        ("mysql://u@h1,h2:x/db", "the port must be a number"),
        ("mysql://u@h1,h2/db?unix_socket=/run/m.sock", "unix_socket names one local server"),
        ("mysql://u@h1,h2/", "the database name is missing"),
    ],
)
def test_a_malformed_list_of_nodes_is_refused_naming_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_dsn(text)


def test_a_malformed_list_of_nodes_never_shows_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        parse_dsn(f"mysql://u:{SECRET}@h1,h2:port/db")
    assert SECRET not in str(info.value)


NOT_LATIN1 = (
    "the DSN's password has a character outside Latin-1 (ISO 8859-1), which the MySQL driver "
    "cannot send: give the database user a password of Latin-1 characters"
)


@given(head=_passwords, odd=_beyond_latin1, tail=_passwords)
def test_a_password_beyond_latin1_is_a_config_error_naming_no_part_of_it(head: str, odd: str, tail: str) -> None:
    password = head + odd + tail
    with pytest.raises(ConfigError) as info:
        parse_dsn(f"mysql://app:{urllib.parse.quote(password, safe='')}@db.example:3306/jobs")
    assert str(info.value) == NOT_LATIN1  # a fixed sentence: it cannot carry any part of the password
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert odd not in repr(info.value)


@pytest.mark.mysql
def test_a_password_beyond_latin1_stops_every_command_with_exit_code_2(mysql_dsn: str, tmp_path: Path) -> None:
    """On the real server: before, pymysql's raw UnicodeEncodeError named the character and its
    position (exit code 1, a traceback); the producer API raised it too."""
    import fastsched

    password = "Zq€🔑Ω-s3cr"
    parts = urllib.parse.urlsplit(mysql_dsn)
    dsn = f"mysql://{parts.username}:{urllib.parse.quote(password, safe='')}@{parts.hostname}:{parts.port}{parts.path}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTSCHED_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    for args, extra in ((["status", "--dsn", dsn], {}), (["start", "--until-empty"], {"FASTSCHED_DSN": dsn})):
        done = subprocess.run([sys.executable, "-m", "fastsched", *args], env={**env, **extra}, cwd=tmp_path,
                              capture_output=True, text=True, timeout=60, check=False)
        named = "--dsn" if "--dsn" in args else "FASTSCHED_DSN"
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip() == (
            f"fastsched-pool: error: {named}: invalid value 'mysql://{parts.username}:***@{parts.hostname}:"
            f"{parts.port}{parts.path}': {NOT_LATIN1}"
        )
        assert not any(c in done.stdout + done.stderr for c in "€🔑Ω"), done.stderr
        assert "s3cr" not in done.stderr and "Zq" not in done.stderr
    with pytest.raises(ConfigError, match="outside Latin-1") as info:
        fastsched.connect(dsn)
    assert not any(c in repr(info.value) for c in "€🔑Ω")
