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
import functools
import uuid
from collections.abc import Callable
from contextlib import nullcontext

from django.db import connection
from django.db.models import Field, Model

# Django's conversions turn a value of these types, in a field of this kind, into itself
# (on PostgreSQL, which takes them as they are): skipping them halves the cost of a row.
_SAME = {
    "AutoField": int, "BigAutoField": int, "IntegerField": int, "BigIntegerField": int,
    "PositiveIntegerField": int, "PositiveSmallIntegerField": int, "SmallIntegerField": int,
    "CharField": str, "TextField": str, "BooleanField": bool, "DecimalField": decimal.Decimal,
    "UUIDField": uuid.UUID, "DateTimeField": datetime.datetime,
}  # fmt: skip

COPY_FROM = 20  # rows; below that an INSERT (one round trip, ids returned) is as quick


def objects_insert(model: type[Model], objs: list[Model], *, ids: bool = False) -> list[Model]:
    """Insert `objs` (new instances of `model`, with an auto primary key): by COPY when
    there are many and the database is PostgreSQL, by one INSERT when there are few, else
    by bulk_create. Constraints and triggers fire either way and errors arrive as Django's
    (e.g. IntegrityError). An inserted object gets its primary key; a copied one only with
    `ids` (drawn from the table's sequence first: one more query), else it stays None (for
    rows nothing refers to later). No signals are sent, as with bulk_create."""
    if connection.vendor != "postgresql":
        return model.objects.bulk_create(objs)
    if len(objs) < COPY_FROM:
        return _inserted(model, objs)
    meta = model._meta
    fields = [f for f in meta.concrete_fields if ids or not f.primary_key]
    if ids:
        for obj, pk in zip(objs, _ids_next(model, len(objs)), strict=True):
            obj.pk = pk
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    sql = f"COPY {connection.ops.quote_name(meta.db_table)} ({columns}) FROM STDIN"
    with connection.cursor() as cursor:
        log = getattr(cursor, "debug_sql", None)  # tests count queries: count this one too
        with (
            connection.wrap_database_errors,
            log(sql) if log else nullcontext(),
            cursor.cursor.copy(sql) as copy,
        ):
            readers = [_reader(f) for f in fields]
            for obj in objs:
                copy.write_row([read(obj) for read in readers])
    return _saved(objs)


def _inserted(model: type[Model], objs: list[Model]) -> list[Model]:
    """One INSERT ... RETURNING the ids, its text kept per table and row count. For the
    few rows of a till's sale, building the statement anew (as bulk_create and save do)
    costs more CPU than PostgreSQL spends running it."""
    if not objs:
        return objs
    sql, readers = _insert_statement(model, len(objs))
    with connection.cursor() as cursor:
        cursor.execute(sql, [read(obj) for obj in objs for read in readers])
        ids = cursor.fetchall()
    for obj, (pk,) in zip(objs, ids, strict=True):
        obj.pk = pk
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


def _saved(objs: list[Model]) -> list[Model]:
    for obj in objs:
        obj._state.adding = False
        obj._state.db = connection.alias
    return objs


def _reader(field: Field) -> Callable[[Model], object]:
    """How one column's value is read off an object, as bulk_create would read it."""
    if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
        return lambda obj: field.get_db_prep_save(field.pre_save(obj, True), connection)
    target = field.target_field if field.is_relation else field
    same = _SAME.get(target.get_internal_type())
    attname = field.attname

    def read(obj):
        value = getattr(obj, attname)
        if value is None or (type(value) is same and _aware(value)):
            return value
        return field.get_db_prep_save(value, connection)

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
