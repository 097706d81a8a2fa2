"""The SQL of each dialect, read from ``fastsched/sql/<dialect>/``; and the one helper that writes SQL.

``queries.sql`` holds named blocks, each starting with a line ``-- name: <query_name>``; other lines
starting with ``--`` are comments and are dropped. ``schema.sql`` (and a query holding several
statements) separates its statements with lines holding only ``;``. A query that is the same in
every dialect is written once, in ``sql/common/queries.sql``, with named parameters (``:name``) that
:func:`load_queries` writes in the dialect's paramstyle; a dialect's ``queries.sql`` holds the
queries that differ. Every dialect ends up with the same query names, and no name is in the
common file and a dialect's with the same text (``tests/test_sql_dialects.py`` checks both).
A block named ``<row>_columns`` is the select list of a row type that several queries read: they
hold ``{<row>_columns}`` and get it inlined when they load (:func:`with_fragments`); a block named
``<rule>_condition`` is a part of a WHERE that several queries share, inlined the same way.
A query that wraps another holds ``{query:<name>}`` where the other goes (:func:`with_subqueries`).
``migrate_<v>_to_<v+1>.sql`` holds the steps from one schema version to the next
(:func:`load_migration`); the schema and its migrations are per dialect.

No SQL is built with string formatting anywhere in fastsched except here: :func:`expand_in`
inlines a validated list of ids (or of 20-byte dedup hashes) in place of ``{ids}``,
:func:`expand_queues` validated queue names in place of every ``{queues}``, and
:func:`expand_pid_cases` a CASE list of ids and pids, ints only, and :func:`expand_rows` a
one-row INSERT's placeholders repeated for several rows (no value is inlined).
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from collections.abc import Sequence
from typing import NamedTuple

IN_MARKER = "{ids}"  # where expand_in puts the list, as in ``WHERE id IN ({ids})``
QUEUES_MARKER = "{queues}"  # where expand_queues puts the names, as in ``AND queue IN ({queues})``
PID_CASES_MARKER = "{pid_cases}"  # claim_batches: "WHEN id IN (...) THEN <pid>" per batch
# Where expand_spread puts a claim's share of the rows (Galera). A comment, so that the query
# runs as it is where no share applies (and where tests run the raw text).
SPREAD_MARKER = "/* spread */"
HASH_BYTES = 20  # sha1 digests, as stored in workerqueue.dedup_hash
_INT_ONLY = {int}
_NAME = re.compile(r"^--\s*name:\s*([A-Za-z_][A-Za-z0-9_]*)\s*$")


def _read(dialect: str, filename: str) -> str:
    return (importlib.resources.files("fastsched") / "sql" / dialect / filename).read_text(encoding="utf-8")


def split_statements(text: str) -> list[str]:
    """The statements of ``text``, separated by lines holding only ``;``; comment lines dropped."""
    statements: list[str] = []
    lines: list[str] = []
    for line in text.splitlines() + [";"]:
        if line.strip() == ";":
            body = "\n".join(lines).strip()
            if body:
                statements.append(body)
            lines = []
        elif not line.lstrip().startswith("--"):
            lines.append(line.rstrip())
    return statements


def parse_queries(text: str) -> dict[str, str]:
    """``{name: sql}`` from the named blocks of a queries file. A repeated name is an error."""
    queries: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []

    def flush() -> None:
        if name is None:
            return
        body = "\n".join(lines).strip()
        if not body:
            raise ValueError(f"query {name!r} is empty")
        queries[name] = body

    for line in text.splitlines():
        match = _NAME.match(line.strip())
        if match:
            flush()
            name = match.group(1)
            if name in queries:
                raise ValueError(f"query {name!r} is defined twice")
            lines = []
        elif name is not None and not line.lstrip().startswith("--"):
            lines.append(line.rstrip())
    flush()
    return queries


COMMON = "common"  # sql/common/queries.sql: the queries written once for every dialect
# How each dialect's driver takes parameters (PEP 249 paramstyle): "named" is how the common queries
# are written; pymysql's "pyformat" wants %(name)s, and a literal % doubled.
PARAMSTYLES = {"mysql": "pyformat", "sqlite": "named"}
_NAMED_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_][A-Za-z0-9_]*)")
_LITERAL = re.compile(r"'[^']*'")
# Blocks so named are a select list or a part of a WHERE, inlined by with_fragments.
FRAGMENT_SUFFIXES = ("_columns", "_condition")
_FRAGMENT = re.compile(r"\{([a-z_]+_(?:columns|condition))\}")
_SUBQUERY = re.compile(r"\{query:([a-z_]+)\}")


def in_paramstyle(name: str, sql: str, paramstyle: str) -> str:
    """A common query (named parameters, ``:name``) as a driver of ``paramstyle`` takes it.

    ValueError for what the conversion could get wrong: a positional ``?``, a ``%``, or a colon
    inside a quoted literal (none of which a common query needs)."""
    outside = _LITERAL.sub("''", sql)
    if "?" in outside or "%" in sql or any(":" in literal for literal in _LITERAL.findall(sql)):
        raise ValueError(
            f"common query {name!r}: only named parameters (:name) are allowed; no ?, no %, no colon in a literal"
        )
    if paramstyle == "named":
        return sql
    if paramstyle == "pyformat":
        return _NAMED_PARAM.sub(r"%(\1)s", sql)
    raise ValueError(f"no conversion of the common queries to paramstyle {paramstyle!r}")


@functools.cache
def common_queries() -> dict[str, str]:
    """The queries of ``sql/common/queries.sql``, as written (named parameters)."""
    return parse_queries(_read(COMMON, "queries.sql"))


@functools.cache
def dialect_queries(dialect: str) -> dict[str, str]:
    """The queries of ``sql/<dialect>/queries.sql`` alone."""
    return parse_queries(_read(dialect, "queries.sql"))


@functools.cache
def load_queries(dialect: str) -> dict[str, str]:
    """The named queries of ``dialect`` ("mysql" or "sqlite"): the common ones in its paramstyle,
    then its own, which add to them (or, where a name is in both, replace the common one)."""
    paramstyle = PARAMSTYLES[dialect]
    queries = {name: in_paramstyle(name, sql, paramstyle) for name, sql in common_queries().items()}
    queries.update(dialect_queries(dialect))
    return with_subqueries(with_fragments(queries))


def with_fragments(queries: dict[str, str]) -> dict[str, str]:
    """``queries`` without their fragments (the blocks named ``<row>_columns``: select lists, and
    ``<rule>_condition``: parts of a WHERE), each inlined where a query holds ``{<name>}``: a row
    type read by several queries has its columns written once, a rule several claims apply its
    condition. This is the file's own text put together at load time, never data."""
    fragments = {name: sql for name, sql in queries.items() if name.endswith(FRAGMENT_SUFFIXES)}

    def inline(match: re.Match[str]) -> str:
        found = fragments.get(match.group(1))
        if found is None:
            raise ValueError(f"no fragment named {match.group(1)!r}")
        return found

    return {name: _FRAGMENT.sub(inline, sql) for name, sql in queries.items() if name not in fragments}


def with_subqueries(queries: dict[str, str]) -> dict[str, str]:
    """``queries`` with each ``{query:<name>}`` replaced by the query of that name: a query that
    wraps another (claim_priority_packed) holds it once, in its own block."""

    def inline(match: re.Match[str]) -> str:
        found = queries.get(match.group(1))
        if found is None or _SUBQUERY.search(found):
            raise ValueError(f"no query named {match.group(1)!r} to inline, or it inlines one itself")
        return found

    return {name: _SUBQUERY.sub(inline, sql) for name, sql in queries.items()}


@functools.cache
def load_schema(dialect: str) -> tuple[str, ...]:
    """The schema statements of ``dialect``, in order."""
    return tuple(split_statements(_read(dialect, "schema.sql")))


class MigrationStep(NamedTuple):
    """One step of a schema migration: its statements run in one transaction, unless ``done`` (a
    query) returns a non-zero first column, which says an earlier, interrupted run did the step."""

    name: str
    statements: tuple[str, ...]
    done: str | None


DONE_SUFFIX = "_done"


@functools.cache
def load_migration(dialect: str, from_version: int) -> tuple[MigrationStep, ...] | None:
    """The steps from schema ``from_version`` to the next one, in file order; None if there is none.

    Each named block of ``migrate_<v>_to_<v+1>.sql`` is a step, except a block ``<step>_done``,
    which is the guard of ``<step>``.
    """
    try:
        text = _read(dialect, f"migrate_{from_version}_to_{from_version + 1}.sql")
    except FileNotFoundError:
        return None
    blocks = parse_queries(text)
    steps = [name for name in blocks if not (name.endswith(DONE_SUFFIX) and name[: -len(DONE_SUFFIX)] in blocks)]
    return tuple(
        MigrationStep(name, tuple(split_statements(blocks[name])), blocks.get(name + DONE_SUFFIX))
        for name in steps
    )


def expand_in(sql: str, values: Sequence[int] | Sequence[bytes]) -> str:
    """``sql`` with its ``{ids}`` marker replaced by the inlined, validated ``values``.

    Each value must be an int (not a bool), inlined as a decimal literal, or a 20-byte digest,
    inlined as a hex literal ``X'...'`` that both dialects read as a blob. Inlining is much
    faster than one placeholder per id in pymysql, and safe because nothing else can pass
    the checks. An empty list raises ValueError: ``IN ()`` is a syntax error, so callers skip
    the statement instead.
    """
    if not values:
        raise ValueError("expand_in needs at least one value: callers must skip an empty IN list")
    if sql.count(IN_MARKER) != 1:
        raise ValueError(f"the query must hold exactly one {IN_MARKER} marker")
    if set(map(type, values)) == _INT_ONLY:  # the hot path (claims, completions): all in C
        listed = values if type(values) is list else list(values)
        return sql.replace(IN_MARKER, repr(listed)[1:-1])  # "1, 2, 3"
    parts: list[str] = []
    append = parts.append
    for value in values:
        if type(value) is int:  # the common case, and excludes bool
            append(str(value))
        elif isinstance(value, bytes) and len(value) == HASH_BYTES:
            append("X'" + value.hex() + "'")
        elif isinstance(value, int) and not isinstance(value, bool):
            append(str(int(value)))
        else:
            raise ValueError(f"an IN list holds ints or {HASH_BYTES}-byte hashes, got {value!r}")
    return sql.replace(IN_MARKER, ",".join(parts))


def expand_queues(sql: str, queues: Sequence[str]) -> str:
    """``sql`` with every ``{queues}`` marker replaced by the quoted, validated queue names.

    A name is inlined only if it passes the rule of queue names (ASCII letters, digits and
    ``_ . : - /``, 1 to 100 characters): no quote or backslash can get through. ValueError for an
    empty list or any other name.
    """
    from fastsched.validation import queue_error

    if not queues:
        raise ValueError("expand_queues needs at least one queue name")
    if QUEUES_MARKER not in sql:
        raise ValueError(f"the query holds no {QUEUES_MARKER} marker")
    for name in queues:
        problem = queue_error(name)
        if problem is not None or type(name) is not str:
            raise ValueError(f"not a queue name to inline: {problem or repr(name)}")
    return sql.replace(QUEUES_MARKER, ", ".join(f"'{name}'" for name in queues))


def expand_pid_cases(sql: str, assigned: Sequence[tuple[int, Sequence[int]]]) -> str:
    """``sql`` with ``{pid_cases}`` replaced by ``WHEN id IN (<ids>) THEN <pid>`` per (pid, ids)
    of ``assigned`` and ``{ids}`` by all the ids (:func:`expand_in`). Every pid and id must be an
    int (not a bool): ValueError otherwise, before anything is inlined."""
    if not assigned or sql.count(PID_CASES_MARKER) != 1:
        raise ValueError(f"expand_pid_cases needs batches and a query with exactly one {PID_CASES_MARKER} marker")
    cases: list[str] = []
    claimed: list[int] = []
    for pid, ids in assigned:
        if type(pid) is not int or not ids or set(map(type, ids)) != _INT_ONLY:
            raise ValueError(f"a pid case holds an int pid and ints, got {pid!r}: {list(ids)[:5]!r}")
        cases.append(f"WHEN id IN ({repr(list(ids))[1:-1]}) THEN {pid}")
        claimed.extend(ids)
    return expand_in(sql.replace(PID_CASES_MARKER, " ".join(cases)), claimed)


def expand_spread(sql: str, share: tuple[int, int] | None) -> str:
    """``sql`` with its SPREAD_MARKER replaced by the condition that keeps share ``(slot, of)``
    of the rows: those whose id hashes to ``slot`` modulo ``of`` (CRC32, not the id itself: on
    Galera a node's ids all fall in one class modulo the cluster size, auto_increment_offset).
    ``share`` None: the query unchanged. Both numbers must be ints, 0 <= slot < of."""
    if share is None:
        return sql
    slot, of = share
    if type(slot) is not int or type(of) is not int or not 0 <= slot < of:
        raise ValueError(f"a claim's share must be two ints 0 <= slot < of, got {share!r}")
    if sql.count(SPREAD_MARKER) != 1:
        raise ValueError(f"expand_spread needs a query with exactly one {SPREAD_MARKER} marker")
    return sql.replace(SPREAD_MARKER, f"AND MOD(CRC32(id), {of}) = {slot}")


@functools.lru_cache(maxsize=8)
def _insert_parts(query: str) -> tuple[str, str, str]:
    """An ``INSERT ... VALUES (...) ON DUPLICATE ...`` cut into (head, the row, tail)."""
    start = query.index("VALUES") + len("VALUES")
    end = query.index("ON DUPLICATE")
    return query[:start] + " ", query[start:end].strip(), " " + query[end:]


def expand_rows(sql: str, rows: int) -> str:
    """The one-row ``INSERT ... VALUES (<row>) ON DUPLICATE ...`` ``sql`` as ONE statement of
    ``rows`` rows: its row of placeholders repeated, the parameters then given row after row (a
    driver's executemany folds rows itself only when VALUES holds bare placeholders)."""
    if type(rows) is not int or rows < 1:
        raise ValueError(f"expand_rows needs a number of rows >= 1, got {rows!r}")
    head, values, tail = _insert_parts(sql)
    return f"{head}{','.join([values] * rows)}{tail}"
