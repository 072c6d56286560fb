"""Values a request reads once from the shared cache, then keeps until it ends: the
earning rules' generation token and the program settings. A request thus sees the program
as it was when it began, and a till's purchase (or a batch of 500) makes one cache round
trip for each, not one per use. Outside requests (jobs, the shell, tests calling services)
every call reads afresh.

Per thread: a threaded server serves one request per thread."""

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
_local = threading.local()  # .values: {name: value} while a request runs, else None


def request_begins(**kwargs) -> None:
    _local.values = {}


def request_ends(**kwargs) -> None:
    _local.values = None


def remembered(name: str, read: Callable[[], T]) -> T:
    values = getattr(_local, "values", None)
    if values is None:
        return read()
    if name not in values:
        value = read()
        if value is None:  # nothing to keep (e.g. the cache is down): read again next time
            return value
        values[name] = value
    return values[name]


def forget(name: str) -> None:
    """The value changed (in this request): read it again at its next use."""
    values = getattr(_local, "values", None)
    if values:
        values.pop(name, None)
