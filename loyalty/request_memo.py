"""Values a request reads once from the shared cache, then keeps until it ends: the
earning rules' generation token and the program settings. A request thus sees the program
as it was when it began, and a till's purchase (or a batch of 500) makes one cache round
trip for each, not one per use. Outside requests (jobs, the shell, tests calling services)
every call reads afresh.

The names are the values' cache keys. Those named in `read_together` come in one round
trip (MGET) when the request first needs any of them, or with the first value read
`together=True` (an API request's key: every till request reads it first).

Per thread: a threaded server serves one request per thread."""

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
_local = threading.local()  # .values: {name: value} while a request runs, else None
_together: tuple[str, ...] = ()
_shared: frozenset[str] = frozenset()  # of those, the ones decoded once per process
_FETCHED = object()  # in .values once the request has read the `_together` keys
_COUNTED = "counted:"  # .values holds a counter's new value under this prefix


def request_begins(**kwargs) -> None:
    _local.values = {}


def request_ends(**kwargs) -> None:
    _local.values = None


def remembered(
    name: str,
    read: Callable[[], T],
    *,
    together: bool = False,
    shared: bool = False,
    counting: tuple[str, int] | None = None,
) -> T:
    """The request's value of cache key `name`, from `read()` the first time. With
    `together`, the first read brings the `read_together` keys along in its round trip.
    With `shared` too, the value that round trip finds is decoded once per process while
    it stays the same in the cache, and every request gets that one object: for values
    that nobody changes in place (a till's API key). `counting` is a (key, timeout)
    counter that round trip adds one to, for `counted` to tell (the rate limit)."""
    values = getattr(_local, "values", None)
    if values is None:
        return read()
    if name not in values and (together or name in _together) and _FETCHED not in values:
        values[_FETCHED] = True
        values.update(_read_together(name, shared, counting))
    if name not in values:
        value = read()
        if value is None:  # nothing to keep (e.g. the cache is down): read again next time
            return value
        values[name] = value
    return values[name]


def counted(name: str) -> int | None:
    """The new value of counter `name` if this request's round trip added one to it
    (`remembered(counting=...)`), else None: then the caller counts by itself."""
    values = getattr(_local, "values", None)
    return values.pop(_COUNTED + name, None) if values else None


def forget(name: str) -> None:
    """The value changed (in this request): read it again at its next use."""
    values = getattr(_local, "values", None)
    if values:
        values.pop(name, None)


def read_together(*names: str, shared: bool = False) -> None:
    """Cache keys that a request (a till's purchase) reads in one round trip. A value
    found is what its own read would return; a missing one is read the usual way.
    `shared` values are decoded once per process while they stay the same in the cache,
    as `remembered(shared=True)`: only for values nobody changes in place."""
    global _together, _shared
    _together = tuple(dict.fromkeys(_together + names))
    if shared:
        _shared = _shared | set(names)


def _read_together(name: str, shared: bool, counting: tuple[str, int] | None) -> dict:
    from django.core.cache import cache

    try:
        names = tuple(dict.fromkeys((*_together, name)))
        if hasattr(cache, "get_many_shared"):  # config.cache.ReusingRedisCache
            counts = [counting] if counting else []
            found = cache.get_many_shared(
                names, shared=(_shared | {name}) if shared else _shared, counts=counts
            )
            for key, _timeout in counts:
                found[_COUNTED + key] = found.pop(key)
        else:
            found = cache.get_many(names)
        return {k: v for k, v in found.items() if v is not None}
    except Exception:  # a cache outage: each value's own read copes with it
        return {}
