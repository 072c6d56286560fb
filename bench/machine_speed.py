"""How fast the machine runs Python right now: CPU milliseconds of a fixed workload (dict,
string and integer work, like a request's), best of three. The same purchase costs up to
half again as much CPU in a slow phase of this shared machine as in a fast one, so the
bench prints this beside its figures: compare runs of different code only when it is
close, or run them side by side.

    python bench/machine_speed.py   -> prints e.g. 118
"""

import time


def workload() -> int:
    table = {}
    for i in range(200_000):
        table[f"k{i}"] = (i * 7) % 1013
    return sum(len(key) + value for key, value in table.items())


def best_ms(rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        workload()
        best = min(best, time.process_time() - start)
    return best * 1000


if __name__ == "__main__":
    print(f"{best_ms():.0f}")
