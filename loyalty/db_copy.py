"""Inserts for the tills' hot path, on PostgreSQL: COPY for the offline batch's hundreds
of rows a table, one INSERT kept ready for the few rows of a single sale.

Django's bulk_create sends each column as one array parameter, which psycopg quotes in
Python element by element; COPY streams the rows, formatted in C. For 500 journal
entries that is most of their cost. For a sale's two or three rows, bulk_create and save
spend more CPU building the statement than PostgreSQL spends running it, so the INSERT's
text is built once per table and row count. On other databases (SQLite in development)
this is plain bulk_create.
"""

import datetime
import decimal
import enum
import functools
import re
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from typing import TypeVar

import psycopg
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper
from django.db.models import Field, Model

# Django's conversions turn a value of these types, in a field of this kind, into itself
# (on PostgreSQL, which takes them as they are): skipping them halves the cost of a row.
_SAME = {
    "AutoField": int, "BigAutoField": int, "IntegerField": int, "BigIntegerField": int,
    "PositiveIntegerField": int, "PositiveSmallIntegerField": int, "SmallIntegerField": int,
    "CharField": str, "TextField": str, "BooleanField": bool, "DecimalField": decimal.Decimal,
    "UUIDField": uuid.UUID, "DateTimeField": datetime.datetime,
}  # fmt: skip

M = TypeVar("M", bound=Model)

COPY_FROM = 20  # rows; below that an INSERT (one round trip, ids returned) is as quick
KEPT_STATEMENTS = 64  # cursors kept per connection, one per hot statement (statement_cursor)
# psycopg's own loader of timestamptz text (in C with psycopg[binary]). Django registers a
# Python one that puts its time zone on each value; where the session's time zone is UTC,
# as Django's is, psycopg's gives the very same values, at a fraction of the cost (a sale's
# member lookup reads ten).
_PSYCOPG_TIMESTAMPTZ = psycopg.adapters.get_loader(
    psycopg.adapters.types["timestamptz"].oid, psycopg.pq.Format.TEXT
)


def unsaved(model: type[M], **values) -> M:
    """`model(**values)`: a new instance, its other fields at their defaults, a related
    instance given by field name cached on it. Built the way Django builds a row it has
    read, from positional values: its keyword path raises and catches a KeyError for each
    field not given (two for a foreign key) and checks each related instance through the
    descriptor (consulting the database routers), which made a sale's eight new rows
    (entry, postings, lot, purchase, lines, idempotency record) 6 % of the app's
    instructions. This project has one database and no routers. Unknown names raise
    TypeError."""
    args, related = [], []
    for field, name, attname, target, default in _columns(model):
        if name in values:
            value = values.pop(name)
            if target is not None:
                related.append((field, value))
                value = None if value is None else getattr(value, target)
        elif attname in values:
            value = values.pop(attname)
        else:
            value = default()
        args.append(value)
    if values:
        raise TypeError(f"{model.__name__}() got unexpected keyword arguments: {', '.join(values)}")
    obj = model(*args)
    for field, value in related:
        field.set_cached_value(obj, value)
        if value is not None:  # as the descriptor does, with no database routers
            obj._state.db = obj._state.db or value._state.db or DEFAULT_DB_ALIAS
            value._state.db = value._state.db or obj._state.db
    return obj


@functools.cache
def _columns(model: type[Model]) -> tuple[tuple[Field, str, str, str | None, Callable], ...]:
    """Per concrete field in order: it, its name and column attribute, the attribute of
    the key it refers to (None unless a relation), and its default."""
    return tuple(
        (f, f.name, f.attname, f.target_field.attname if f.is_relation else None, f.get_default)
        for f in model._meta.concrete_fields
    )


def objects_insert(model: type[Model], objs: list[Model], *, ids: bool = False) -> list[Model]:
    """Insert `objs` (new instances of `model`, with an auto primary key): by COPY when
    there are many and the database is PostgreSQL, by one INSERT when there are few, else
    by bulk_create. Constraints and triggers fire either way and errors arrive as Django's
    (e.g. IntegrityError). An inserted object gets its primary key; a copied one only with
    `ids` (drawn from the table's sequence first: one more query), else it stays None (for
    rows nothing refers to later). No signals are sent, as with bulk_create."""
    db = default_db()
    if db.vendor != "postgresql":
        return model.objects.bulk_create(objs)
    if len(objs) < COPY_FROM:
        return _inserted(model, objs, db)
    meta = model._meta
    fields = [f for f in meta.concrete_fields if ids or not f.primary_key]
    if ids:
        _pks_set(objs, _ids_next(model, len(objs)))
    columns = ", ".join(db.ops.quote_name(f.column) for f in fields)
    sql = f"COPY {db.ops.quote_name(meta.db_table)} ({columns}) FROM STDIN"
    with db.cursor() as cursor:
        log = getattr(cursor, "debug_sql", None)  # tests count queries: count this one too
        with (
            db.wrap_database_errors,
            log(sql) if log else nullcontext(),
            cursor.cursor.copy(sql) as copy,
        ):
            readers = [_reader(f) for f in fields]
            for obj in objs:
                copy.write_row([read(obj, db) for read in readers])
    return _saved(objs)


def _inserted(model: type[Model], objs: list[Model], db: BaseDatabaseWrapper) -> list[Model]:
    """One INSERT ... RETURNING the ids, its text kept per table and row count. For the
    few rows of a till's sale, building the statement anew (as bulk_create and save do)
    costs more CPU than PostgreSQL spends running it."""
    if not objs:
        return objs
    sql, readers = _insert_statement(model, len(objs))
    ids = statement_rows(db, sql, [read(obj, db) for obj in objs for read in readers])
    _pks_set(objs, [pk for (pk,) in ids])
    return _saved(objs)


@functools.cache
def _insert_statement(model: type[Model], rows: int) -> tuple[str, list]:
    meta = model._meta
    fields = [f for f in meta.concrete_fields if f is not meta.auto_field and not f.generated]
    quote = connection.ops.quote_name
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
        f"VALUES {', '.join([row] * rows)} "
        f"RETURNING {quote(meta.db_table)}.{quote(meta.pk.column)}"
    )
    return sql, [_reader(f) for f in fields]


def family_insert(parent: Model, children: list[Model], *, also: tuple[str, list] = ("", [])):
    """Insert `parent` and its `children` (new, unsaved instances) in one statement on
    PostgreSQL: a writable CTE per table, each row taking the new id of the row it refers
    to from that row's RETURNING. A child may refer to the parent, or to a child of an
    earlier model that is the only one of its model here (a purchase riding along with
    its ledger entry, and the purchase's lines): by foreign key set to that instance.
    Rows of a model that refer to none of them just go in alongside (the idempotency
    record of the sale's answer). `also` is one more data-modifying statement (SQL and
    parameters) to run in it, e.g. an UPDATE of stored balances. Everything gets its
    primary key. Elsewhere: objects_insert one table after the other, then `also`.

    A till's sale writes an entry with its postings and lot, and a purchase with its
    lines: as separate statements each one cost a round trip and as much CPU again in
    psycopg and PostgreSQL as the rows themselves. Foreign keys are checked at the end of
    the statement (Django makes them deferred anyway), so the order of the CTEs is free."""
    runs = _runs(children)
    sources = _sources(parent, runs)
    shape = tuple((model, len(objs), _linked(model, objs, sources)) for model, objs in runs)
    db = default_db()
    if db.vendor != "postgresql":
        objects_insert(type(parent), [parent])
        for (model, objs), (_m, _n, linked) in zip(runs, shape, strict=True):
            _links_set(model, objs, linked)
            objects_insert(model, objs)
        if also[0]:
            with db.cursor() as cursor:
                cursor.execute(*also)
        return
    sql, readers = _family_statement(type(parent), shape, also[0])
    params = [read(parent, db) for read in readers[0]]
    for (_model, objs), run_readers in zip(runs, readers[1:], strict=True):
        params += [read(obj, db) for obj in objs for read in run_readers if read is not None]
    params += also[1]
    rows = statement_rows(db, sql, params)
    ids: dict[int, list[int]] = {}
    for table, pk in rows:
        ids.setdefault(table, []).append(pk)
    _pks_set([parent], ids[0])
    _saved([parent])
    for i, ((model, objs), (_m, _n, linked)) in enumerate(zip(runs, shape, strict=True), 1):
        _pks_set(objs, ids[i])
        _links_set(model, objs, linked)
        _saved(objs)


def default_db() -> BaseDatabaseWrapper:
    """The default database's connection. Each use of Django's `connection` looks it up
    in a thread-local that raises and catches an exception to find out there is no event
    loop (asgiref): about 0.25 % of a till's purchase each, so the inserts look it up
    once and hand it on."""
    return connections[DEFAULT_DB_ALIAS]


def statement_rows(db: BaseDatabaseWrapper, sql: str, params: list) -> list[tuple]:
    """Run one of the tills' hot statements (`statement_cursor`) and return its rows."""
    with statement_cursor(db, sql) as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def statement_cursor(db: BaseDatabaseWrapper, sql: str) -> CursorWrapper:
    """A Django cursor to run the tills' hot statement `sql` (a sale runs two), in a
    `with` block. With server-side binding (PostgreSQL's default here,
    DB_PREPARED_STATEMENTS) it wraps a psycopg cursor kept for that statement on the
    connection (each thread has its own):

    - kept, because a new cursor cost ~14 µs: Django looks three times for a running
      event loop, raising and catching a RuntimeError each time;
    - kept per statement, because psycopg keeps a cursor's adapters (which parameter types
      dump how, which result columns load how) only while it runs the same statement
      again: one cursor taking turns at a sale's statements looked them all up anew each
      time, 2.4 % of the app's instructions a sale;
    - a RawCursor handed $1, $2... for the %s: psycopg keeps its own conversion only for
      statements of up to 50 parameters, and a sale's insert has more (52 with two
      lines): converting it anew each time was 8 % of the app's instructions a sale.

    Django's wrapper still maps errors, logs the query (with %s, as tests count queries)
    and runs execute wrappers. Otherwise (client-side binding, SQLite) a new cursor."""
    if not db.features.uses_server_side_binding:
        return db.cursor()  # client-side binding: %s is quoted in, not bound
    db.close_if_health_check_failed()
    if db.connection is None:
        db.ensure_connection()
    kept = getattr(db, "_statement_cursors", None)
    if kept is None or kept[0] is not db.connection:
        kept = db._statement_cursors = (db.connection, {})
    cursors = kept[1]
    cursor = cursors.get(sql)
    if cursor is None or cursor.closed:
        if len(cursors) >= KEPT_STATEMENTS:  # baskets of every size: start afresh
            cursors.clear()
        cursor = cursors[sql] = _NumberedCursor(db.connection)
        if db.timezone is datetime.UTC and cursor.connection.info.timezone is datetime.UTC:
            cursor.adapters.register_loader("timestamptz", _PSYCOPG_TIMESTAMPTZ)
    db.validate_thread_sharing()
    return _KeptDebugCursor(cursor, db) if db.queries_logged else _KeptCursor(cursor, db)


class _LeftOpen:
    def __exit__(self, *exc_info):
        """Left open for the connection's next statement (a new cursor costs more)."""


class _KeptCursor(_LeftOpen, CursorWrapper):
    pass


class _KeptDebugCursor(_LeftOpen, CursorDebugWrapper):
    pass


class _NumberedCursor(psycopg.RawCursor):
    def execute(self, query, params=None, **kwargs):
        return super().execute(_numbered(query), params, **kwargs)


@functools.lru_cache(maxsize=256)
def _numbered(query: str) -> str:
    """The %s placeholders as $1, $2..., and %% as %."""
    count = iter(range(1, query.count("%s") + 1))
    return re.sub("%[s%]", lambda m: f"${next(count)}" if m[0] == "%s" else "%", query)


def _runs(children: list[Model]) -> list[tuple[type[Model], list[Model]]]:
    """The children grouped by model, in the order each model first appears."""
    runs: dict[type[Model], list[Model]] = {}
    for obj in children:
        runs.setdefault(type(obj), []).append(obj)
    return list(runs.items())


def _sources(parent: Model, runs: list[tuple[type[Model], list[Model]]]) -> dict[int, int]:
    """The rows others may refer to, as {id(instance): its CTE's number}: the parent
    (t0) and each child alone of its model (t1, t2, ...)."""
    sources = {id(parent): 0}
    for i, (_model, objs) in enumerate(runs, 1):
        if len(objs) == 1:
            sources[id(objs[0])] = i
    return sources


def _linked(
    model: type[Model], objs: list[Model], sources: dict[int, int]
) -> tuple[tuple[str, int], ...]:
    """The foreign keys of `model`'s rows that refer to a row of this statement, as
    (field name, that row's CTE number): the same for every row, maybe none."""
    relations = [f for f in model._meta.concrete_fields if f.is_relation]
    linked = {
        tuple(
            (f.name, sources[id(target)])
            for f in relations
            if (target := f.get_cached_value(o, None)) is not None and id(target) in sources
        )
        for o in objs
    }
    if len(linked) != 1:
        raise ValueError(
            f"Every {model.__name__} must refer to the parent (or an earlier row) the same way."
        )
    return linked.pop()


def _links_set(model: type[Model], objs: list[Model], linked: tuple) -> None:
    """Copy the ids of the rows referred to into the foreign key columns (after insert)."""
    for name, _source in linked:
        field = model._meta.get_field(name)
        for obj in objs:
            setattr(obj, field.attname, field.get_cached_value(obj).pk)


@functools.cache
def _family_statement(parent_model: type[Model], shape: tuple, also_sql: str):
    """The statement's text and each table's column readers (None where the column takes
    the id of another row of the statement), kept per table, row count and links."""
    quote = connection.ops.quote_name
    sql, readers = _insert_statement(parent_model, 1)
    pks = [quote(m._meta.pk.column) for m in (parent_model, *(model for model, _n, _l in shape))]
    ctes, selects, all_readers = [f"t0 AS ({sql})"], [f"SELECT 0, {pks[0]} FROM t0"], [readers]
    for i, (model, rows, linked) in enumerate(shape, start=1):
        links = dict(linked)
        if any(source >= i for source in links.values()):
            raise ValueError(f"A {model.__name__} refers to a row that comes after it.")
        meta = model._meta
        fields = [f for f in meta.concrete_fields if f is not meta.auto_field and not f.generated]
        cells = [
            f"(SELECT {pks[links[f.name]]} FROM t{links[f.name]})" if f.name in links else "%s"
            for f in fields
        ]
        row = "(" + ", ".join(cells) + ")"
        ctes.append(
            f"t{i} AS (INSERT INTO {quote(meta.db_table)} "
            f"({', '.join(quote(f.column) for f in fields)}) VALUES {', '.join([row] * rows)} "
            f"RETURNING {quote(meta.db_table)}.{pks[i]})"
        )
        selects.append(f"SELECT {i}, {pks[i]} FROM t{i}")
        all_readers.append([None if f.name in links else _reader(f) for f in fields])
    if also_sql:
        ctes.append(f"also AS ({also_sql})")
    # Each table's ids come back in VALUES order, as bulk_create relies on too.
    return "WITH " + ", ".join(ctes) + " " + " UNION ALL ".join(selects), all_readers


def _pks_set(objs: list[Model], pks: list[int]) -> None:
    """`obj.pk = pk` for models without a parent model (whose key that would set too)."""
    for obj, pk in zip(objs, pks, strict=True):
        setattr(obj, obj._meta.pk.attname, pk)


def _saved(objs: list[Model]) -> list[Model]:
    for obj in objs:
        obj._state.adding = False
        obj._state.db = DEFAULT_DB_ALIAS  # the only database these inserts write to
    return objs


def _reader(field: Field) -> Callable[[Model, BaseDatabaseWrapper], object]:
    """How one column's value is read off an object, as bulk_create would read it."""
    if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
        return lambda obj, db: field.get_db_prep_save(field.pre_save(obj, True), db)
    target = field.target_field if field.is_relation else field
    same = _SAME.get(target.get_internal_type())
    attname = field.attname

    def read(obj, db):
        value = getattr(obj, attname)
        if value is None or (type(value) is same and _aware(value)):
            return value
        value = field.get_db_prep_save(value, db)
        # A choice (e.g. EntryKind.EARN) as its value: psycopg finds an enum's adapter by
        # walking its classes, raising a KeyError at each, on every statement.
        return value.value if isinstance(value, enum.Enum) else value

    return read


def _aware(value) -> bool:
    return not isinstance(value, datetime.datetime) or value.tzinfo is not None


def _ids_next(model: type[Model], count: int) -> list[int]:
    table, pk = model._meta.db_table, model._meta.pk.column
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s) ORDER BY 1",
            [table, pk, count],
        )
        return [row[0] for row in cursor.fetchall()]
