"""Every dialect defines the same named queries; the loader and the one SQL-building helper."""

from __future__ import annotations

import pytest

from fastsched.backends.sqlfiles import (
    PARAMSTYLES,
    common_queries,
    dialect_queries,
    expand_in,
    expand_rows,
    expand_spread,
    in_paramstyle,
    load_queries,
    load_schema,
    parse_queries,
    split_statements,
)

DIALECTS = ("mysql", "sqlite")


def _columns(select_list: str) -> int:
    """The columns of a select list: its commas outside parentheses and quotes, plus one."""
    depth, count, quoted = 0, 1, False
    for char in select_list:
        if char == "'":
            quoted = not quoted
        elif not quoted and char in "()":
            depth += 1 if char == "(" else -1
        elif not quoted and depth == 0 and char == ",":
            count += 1
    return count


def test_dialects_define_the_same_query_names() -> None:
    names = {dialect: set(load_queries(dialect)) for dialect in DIALECTS}
    assert names["mysql"] == names["sqlite"], {
        "only in mysql": sorted(names["mysql"] - names["sqlite"]),
        "only in sqlite": sorted(names["sqlite"] - names["mysql"]),
    }
    assert len(names["mysql"]) > 30


@pytest.mark.parametrize("dialect", DIALECTS)
def test_no_dialect_repeats_a_common_query(dialect: str) -> None:
    """A query the same in every dialect lives in sql/common/queries.sql only: a dialect's file may
    replace a common query with its own text, never hold a copy that could drift from it."""
    common = common_queries()
    assert len(common) > 30
    copies = sorted(
        name for name, sql in dialect_queries(dialect).items()
        if name in common and sql == in_paramstyle(name, common[name], PARAMSTYLES[dialect])
    )
    assert not copies, f"{dialect}/queries.sql repeats common queries: {copies}"


def test_queries_the_same_in_both_dialects_are_written_once() -> None:
    def as_mysql(name: str, sql: str) -> str | None:
        try:
            return in_paramstyle(name, sql, "pyformat")
        except ValueError:  # positional parameters, a %: not comparable, and never common
            return None

    mysql, sqlite = dialect_queries("mysql"), dialect_queries("sqlite")
    same = sorted(name for name in mysql.keys() & sqlite.keys() if as_mysql(name, sqlite[name]) == mysql[name])
    assert not same, f"identical in both dialects, belong in common/queries.sql: {same}"


def test_common_queries_take_each_dialects_paramstyle() -> None:
    sql = "UPDATE t SET a = :a WHERE id = :id AND s = 'x' AND b = :a"
    assert in_paramstyle("q", sql, "named") == sql
    assert in_paramstyle("q", sql, "pyformat") == "UPDATE t SET a = %(a)s WHERE id = %(id)s AND s = 'x' AND b = %(a)s"
    assert load_queries("mysql")["delete_job"] == "DELETE FROM workerqueue WHERE id = %(id)s"
    assert load_queries("sqlite")["delete_job"] == "DELETE FROM workerqueue WHERE id = :id"
    for bad in ("SELECT ? FROM t", "SELECT 1 FROM t WHERE c LIKE 'a%'", "SELECT '10:00', :x"):
        with pytest.raises(ValueError, match="common query 'q'"):
            in_paramstyle("q", bad, "pyformat")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_each_row_type_is_read_over_its_one_select_list(dialect: str) -> None:
    from fastsched.backends.rows import JobRow
    from fastsched.jobs import ClaimedJob

    lists = {**common_queries(), **dialect_queries(dialect)}
    assert _columns(lists["job_columns"]) == len(JobRow._fields)
    assert _columns(lists["claim_columns"]) == len(ClaimedJob._fields)
    queries = load_queries(dialect)
    assert not {"job_columns", "claim_columns"} & queries.keys()  # select lists, not queries
    for name in ("get_job", "lock_job", "failed_jobs"):
        assert "{job_columns}" in lists[name] and lists["job_columns"] in queries[name], name
    for name in ("claim_priority", "claim_priority_queue", "lock_claimable"):
        assert "{claim_columns}" in lists[name] and lists["claim_columns"] in queries[name], name
    written = [name for name, sql in lists.items() if not name.endswith("_columns") and "failed_hash, queue" in sql]
    assert not written, f"the job row's columns written out again: {written}"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_queries_use_the_in_marker_only_in_in_lists(dialect: str) -> None:
    for name, sql in load_queries(dialect).items():
        if "{ids}" in sql:
            assert sql.count("{ids}") == 1, name
            assert "IN ({ids})" in sql, name
        if name == "claim_batches":  # and its per-batch CASE, built from ints in sql.py
            assert sql.count("CASE {pid_cases} END") == 1, name
            sql = sql.replace("{pid_cases}", "")
        if "{queues}" in sql:  # expand_queues: validated queue names, in IN lists only
            assert sql.count("{queues}") == sql.count("IN ({queues})"), name
            sql = sql.replace("IN ({queues})", "")
        assert "{" not in sql.replace("{ids}", ""), name


@pytest.mark.parametrize("dialect", DIALECTS)
def test_queries_use_one_paramstyle(dialect: str) -> None:
    for name, sql in load_queries(dialect).items():
        if dialect == "sqlite":
            assert "%s" not in sql and "%(" not in sql, name
        else:
            assert "?" not in sql and " :" not in sql, name


@pytest.mark.parametrize("dialect", DIALECTS)
def test_schemas_create_the_same_tables_and_columns(dialect: str) -> None:
    text = "\n".join(load_schema(dialect))
    for table in ("workerqueue", "process", "fastsched_meta"):
        assert f"CREATE TABLE IF NOT EXISTS {table}" in text
    for column in ("dedup_hash", "failed_hash", "next_try", "crashes", "last_error", "heartbeat", "due"):
        assert column in text


def test_parse_queries_drops_comments_and_rejects_repeats() -> None:
    text = "-- header\n-- name: a\n-- a comment\nSELECT 1\n\n-- name: b\nSELECT 2\n;\nSELECT 3\n"
    assert parse_queries(text) == {"a": "SELECT 1", "b": "SELECT 2\n;\nSELECT 3"}
    assert split_statements(parse_queries(text)["b"]) == ["SELECT 2", "SELECT 3"]
    with pytest.raises(ValueError, match="twice"):
        parse_queries("-- name: a\nSELECT 1\n-- name: a\nSELECT 2\n")
    with pytest.raises(ValueError, match="empty"):
        parse_queries("-- name: a\n-- only a comment\n")


def test_expand_in_inlines_validated_ints_and_hashes() -> None:
    assert expand_in("DELETE FROM t WHERE id IN ({ids})", [3, 1, 2]) == "DELETE FROM t WHERE id IN (3, 1, 2)"
    assert expand_in("x IN ({ids})", (7,)) == "x IN (7)"
    digest = bytes(range(20))
    assert expand_in("x IN ({ids})", [digest]) == "x IN (X'" + digest.hex() + "')"


@pytest.mark.parametrize("bad", [[], ["1"], [True], [1.5], [b"short"], [None], ["1); DROP TABLE t; --"]])
def test_expand_in_refuses_anything_else(bad: list[object]) -> None:
    with pytest.raises(ValueError):
        expand_in("x IN ({ids})", bad)  # type: ignore[arg-type]


def test_expand_in_needs_exactly_one_marker() -> None:
    with pytest.raises(ValueError, match="marker"):
        expand_in("SELECT 1", [1])


def test_expand_spread_inlines_a_share_of_two_ints() -> None:
    query = load_queries("mysql")["find_claimable"]
    assert "AND MOD(CRC32(id), 3) = 1" in expand_spread(query, (1, 3))
    assert expand_spread(query, None) == query  # the raw text runs as it is: the marker is a comment
    for bad in [(3, 3), (-1, 3), (True, 3), (0, 1.5), ("0", 3)]:
        with pytest.raises(ValueError, match="share"):
            expand_spread(query, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="marker"):
        expand_spread("SELECT 1", (0, 2))


def test_expand_rows_repeats_the_row_of_placeholders_and_nothing_else() -> None:
    sql = "INSERT INTO t (a, b) VALUES (%s, COALESCE(%s, NOW())) ON DUPLICATE KEY UPDATE id = id"
    assert expand_rows(sql, 1) == "INSERT INTO t (a, b) VALUES (%s, COALESCE(%s, NOW())) ON DUPLICATE KEY UPDATE id = id"
    assert expand_rows(sql, 3) == (
        "INSERT INTO t (a, b) VALUES (%s, COALESCE(%s, NOW())),(%s, COALESCE(%s, NOW())),(%s, COALESCE(%s, NOW()))"
        " ON DUPLICATE KEY UPDATE id = id"
    )
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="number of rows"):
            expand_rows(sql, bad)  # type: ignore[arg-type]
