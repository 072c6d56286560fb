"""Bulk inserts through PostgreSQL's COPY, for the offline batch's hundreds of rows a table.

Django's bulk_create sends each column as one array parameter, which psycopg quotes in
Python element by element; COPY streams the rows, formatted in C. For 500 journal
entries that is most of their cost. On other databases (SQLite in development) this is
plain bulk_create.
"""

from contextlib import nullcontext

from django.db import connection
from django.db.models import Model

COPY_FROM = 20  # rows; below that an INSERT (one round trip, ids returned) is as quick


def objects_insert(model: type[Model], objs: list[Model], *, ids: bool = False) -> list[Model]:
    """Insert `objs` (new instances of `model`): by COPY when there are many and the
    database is PostgreSQL, else by bulk_create. Constraints and triggers fire either way
    and errors arrive as Django's (e.g. IntegrityError). With `ids` the objects get their
    primary keys (by COPY, drawn from the table's sequence first: one more query);
    without, a copied object's stays None (for rows nothing refers to later)."""
    if len(objs) < COPY_FROM or connection.vendor != "postgresql":
        return model.objects.bulk_create(objs)
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
            for obj in objs:
                copy.write_row(
                    [f.get_db_prep_save(f.pre_save(obj, True), connection) for f in fields]
                )
    for obj in objs:
        obj._state.adding = False
        obj._state.db = connection.alias
    return objs


def _ids_next(model: type[Model], count: int) -> list[int]:
    table, pk = model._meta.db_table, model._meta.pk.column
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s) ORDER BY 1",
            [table, pk, count],
        )
        return [row[0] for row in cursor.fetchall()]
