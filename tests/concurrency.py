import contextlib
import hashlib
import threading

import psycopg
from django.db import connection

THREADS = 8


def run_at_once(work, count: int = THREADS) -> list:
    """Run work(i) in `count` threads released together; return each result or exception.
    Each thread closes its own database connection (tests use transaction=True)."""
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def worker(i):
        try:
            barrier.wait(timeout=10)
            results[i] = work(i)
        except Exception as exc:
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a worker hung (deadlock?)"
    return results


@contextlib.contextmanager
def other_connection():
    """A second PostgreSQL session on the test database, in autocommit: another request's
    transaction, begun and ended by hand."""
    settings = connection.settings_dict
    with psycopg.connect(
        host=settings["HOST"], port=settings["PORT"], user=settings["USER"],
        dbname=settings["NAME"], autocommit=True,
    ) as other:  # fmt: skip
        yield other


def key_lock_id(store, key: str) -> int:
    """The advisory lock a request with this Idempotency-Key holds while it runs."""
    digest = hashlib.sha256(f"{store.pk}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
