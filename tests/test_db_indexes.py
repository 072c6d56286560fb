"""Every index costs each insert into its table. A foreign key gets an index of its own by
default, which is wasted where an index or unique constraint starting with the same column
exists: the ledger's tables take several rows a sale, so each spare index is paid for at
every till."""

import pytest
from django.apps import apps
from django.db import connection
from django.db.models import ForeignKey, Index, UniqueConstraint

OURS = ("members", "loyalty", "rewards", "partners")


def _covering(model) -> dict[str, str]:
    """The first field of each unconditional index or unique constraint, mapped to its
    name: what an index of that field alone would duplicate."""
    covers = {}
    for item in [*model._meta.indexes, *model._meta.constraints]:
        if isinstance(item, Index | UniqueConstraint) and item.fields and not item.condition:
            first = item.fields[0].lstrip("-")
            covers.setdefault(model._meta.get_field(first).name, item.name)
    for fields in model._meta.unique_together:
        covers.setdefault(fields[0], "unique_together")
    return covers


def test_no_foreign_key_keeps_an_index_that_another_one_covers():
    doubled = []
    for model in apps.get_models():
        if model._meta.app_label not in OURS:
            continue
        covers = _covering(model)
        for field in model._meta.local_fields:
            indexed = isinstance(field, ForeignKey) and field.db_index and not field.unique
            if indexed and field.name in covers:
                doubled.append(f"{model.__name__}.{field.name} ({covers[field.name]})")
    assert doubled == [], f"Set db_index=False, the index named is enough: {doubled}"


@pytest.mark.django_db
def test_the_database_has_dropped_those_indexes_but_kept_the_foreign_keys():
    with connection.cursor() as cursor:
        for model in apps.get_models():
            if model._meta.app_label not in OURS:
                continue
            unindexed = [
                f.column
                for f in model._meta.local_fields
                if isinstance(f, ForeignKey) and not f.db_index and not f.unique
            ]
            if not unindexed:
                continue
            declared = {index.name for index in model._meta.indexes}  # e.g. a partial one
            found = connection.introspection.get_constraints(cursor, model._meta.db_table)
            for column in unindexed:
                alone = [
                    name
                    for name, c in found.items()
                    if c["index"] and c["columns"] == [column] and name not in declared
                ]
                assert alone == [], f"{model._meta.db_table}.{column}: {alone}"
                if connection.vendor == "postgresql":
                    assert any(
                        c["foreign_key"] and c["columns"] == [column] for c in found.values()
                    )
