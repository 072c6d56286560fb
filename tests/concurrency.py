import threading

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
