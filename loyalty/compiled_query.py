"""A queryset compiled once per process and thread, then run with new parameters: for the
tills' hottest reads, whose joins and subqueries cost Django more CPU to turn into SQL
(1-3 ms) than PostgreSQL spends running the statement.

    accounts_by_card = CompiledQuery(lambda card: Account.objects.filter(...card...), str)
    accounts = accounts_by_card.run("2000000000017")

The queryset is built once with a marker of each parameter's type (str, int or datetime)
in its place; the SQL text Django made is kept, and the rows become model instances
(select_related ones and annotations included), or dicts for a `values()` queryset,
exactly as a QuerySet makes them. Only for querysets whose SQL does not depend on the
values (equality and comparison filters, not `__in` a list), on the database the queryset
chose when it was compiled. On PostgreSQL, which takes the values as they are; elsewhere (SQLite in
development, which stores datetimes as text) the queryset runs as usual.

`run_after(first, ...)` makes another one-row read in the same statement, ahead of the
query, which runs only if that read lets it (`FirstRead`): a round trip fewer.
"""

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import connections
from django.db.models import Model, QuerySet
from django.db.models.query import get_related_populators
from django.db.models.sql.compiler import SQLCompiler

from loyalty.db_copy import statement_rows


def _marker(kind: type, index: int):
    if kind is str:
        return f"\x00tally-compiled-query-parameter-{index}\x00"
    if kind is int:  # no id or count comes near it
        return -7_310_424_200_000 - index
    if kind is datetime:  # a moment no real value has: 1901, down to the microsecond
        return datetime(1901, 2, 3, 4, 5, 6, 424_200 + index, tzinfo=UTC)
    raise TypeError(f"CompiledQuery: no marker for {kind!r} parameters")


@dataclass(frozen=True, slots=True)
class FirstRead:
    """A read of exactly one row that `CompiledQuery.run_after` makes in the query's
    statement, ahead of it: the query's rows are read, and locked, only where `proceed`
    holds, an SQL condition on the read's columns (named first.<column>). PostgreSQL
    tests it once, before the query's scan starts, so a read that says stop locks
    nothing. `then` is given the read's row before the query's rows are returned."""

    sql: str  # %s parameters
    params: list
    width: int  # its columns
    proceed: str
    then: Callable[[tuple], None]


@dataclass(frozen=True)
class _Compiled:
    db: str
    sql: str
    params: tuple
    slots: tuple  # for each of params: the index of the run() value going there, or None
    compiler: SQLCompiler  # knows the columns and the related objects
    converters: dict  # what turns a column's value into Python (e.g. JSON), by position
    init_list: list[str]
    start: int
    end: int
    populators: list
    annotations: dict  # {attribute: column position}
    names: list[str] | None  # a values() queryset's keys: its rows are dicts


_UNCOMPILED = object()  # the queryset runs as usual (not PostgreSQL)


class CompiledQuery:
    def __init__(self, build: Callable[..., QuerySet], *kinds: type):
        self._build = build
        self._kinds = kinds or (str,)
        self._local = threading.local()  # .compiled: a compiler belongs to a thread's connection

    def run(self, *values) -> list[Model] | list[dict]:
        compiled = getattr(self._local, "compiled", None)
        if compiled is None:
            compiled = self._local.compiled = self._compile()
        if compiled is _UNCOMPILED:
            return list(self._build(*values))
        return self._objects(compiled, self._rows(compiled, [], values))

    def run_after(self, first: FirstRead, *values) -> list[Model]:
        """`first`'s row (handed to `first.then`) and the query's rows, in one statement;
        no rows when `first.proceed` does not hold. PostgreSQL only."""
        key = (first.sql, first.proceed)
        after = getattr(self._local, "after", None)
        if after is None:
            after = self._local.after = {}  # {(sql, proceed): _Compiled}
        compiled = after.get(key)
        if compiled is None:
            compiled = after[key] = self._compile_after(first)
        rows = self._rows(compiled, first.params, values)
        first.then(rows[0][-first.width :])  # a row always: the query is LEFT JOINed
        return self._objects(compiled, [row for row in rows if row[compiled.start] is not None])

    def _rows(self, compiled: _Compiled, first_params: list, values: tuple) -> list:
        if len(values) != len(self._kinds):
            raise TypeError(f"CompiledQuery.run takes {len(self._kinds)} values")
        params = [
            value if slot is None else values[slot]
            for value, slot in zip(compiled.params, compiled.slots, strict=True)
        ]
        return statement_rows(connections[compiled.db], compiled.sql, [*first_params, *params])

    @staticmethod
    def _objects(compiled: _Compiled, rows: list) -> list[Model] | list[dict]:
        if compiled.converters:
            rows = compiled.compiler.apply_converters(rows, compiled.converters)
        if compiled.names is not None:
            return [dict(zip(compiled.names, row, strict=True)) for row in rows]
        model = compiled.compiler.klass_info["model"]
        db = compiled.db
        objects = []
        for row in rows:
            obj = model.from_db(db, compiled.init_list, row[compiled.start : compiled.end])
            for populator in compiled.populators:
                populator.populate(row, obj)
            for name, position in compiled.annotations.items():
                setattr(obj, name, row[position])
            objects.append(obj)
        return objects

    def _compile_after(self, first: FirstRead) -> _Compiled:
        """The query with `first` ahead of it: its columns come first in each row, as
        the populators expect, and first's last. PostgreSQL evaluates the LATERAL query
        once per row of `first`, and `proceed`, which refers only to `first`, becomes a
        one-time filter in front of the query's scan and its row locks."""
        compiled = self._compile(lambda queryset: queryset.extra(where=[first.proceed]))
        if compiled is _UNCOMPILED or compiled.names is not None:
            raise ValueError("CompiledQuery.run_after: a model query on PostgreSQL only")
        return dataclasses.replace(
            compiled,
            sql=f"SELECT q.*, first.* FROM ({first.sql}) AS first "
            f"LEFT JOIN LATERAL ({compiled.sql}) AS q ON true",
        )

    def _compile(self, amend=None) -> _Compiled | object:
        """The query compiled, its queryset first changed by `amend` if given."""
        markers = [_marker(kind, i) for i, kind in enumerate(self._kinds)]
        queryset = self._build(*markers)
        if amend is not None:
            queryset = amend(queryset)
        if connections[queryset.db].vendor != "postgresql":
            return _UNCOMPILED
        compiler = queryset.query.get_compiler(using=queryset.db)
        sql, params = compiler.as_sql()
        slots = tuple(_slot(value, markers) for value in params)
        columns = [s[0] for s in compiler.select[: compiler.col_count]]
        if set(slots) - {None} != set(range(len(markers))) or compiler.has_composite_fields(
            columns
        ):
            raise ValueError("CompiledQuery: each parameter must reach the SQL as it is")
        klass_info, select = compiler.klass_info, compiler.select
        if klass_info is None:  # values(): the keys as ValuesIterable names them
            query = queryset.query
            names = [*query.extra_select, *query.values_select, *query.annotation_select]
            start = end = 0
            init_list, populators = [], []
        else:
            names = None
            fields = klass_info["select_fields"]
            start, end = fields[0], fields[-1] + 1
            init_list = [f[0].target.attname for f in select[start:end]]
            populators = get_related_populators(klass_info, select, queryset.db)
        return _Compiled(
            db=queryset.db,
            sql=sql,
            params=tuple(params),
            slots=slots,
            compiler=compiler,
            converters=compiler.get_converters(columns),
            init_list=init_list,
            start=start,
            end=end,
            populators=populators,
            annotations=dict(compiler.annotation_col_map),
            names=names,
        )


def _slot(value, markers: list) -> int | None:
    for index, marker in enumerate(markers):
        if type(value) is type(marker) and value == marker:
            return index
    return None
