"""Offline sync: BATCHES sequential POST /api/v1/batches of SIZE purchases each, timed
end to end over one keep-alive connection, like a till catching up after an outage.

    python bench/batch_sync.py URL KEY_FILE CARDS_FILE [BATCHES] [SIZE]

Prints "BATCH key=value ..." and exits 1 unless every item answered 201.
Plain standard library: no Django, no third-party client.
"""

import http.client
import json
import random
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from payload import purchase_body


def main() -> int:
    url, key_file, cards_file = sys.argv[1:4]
    batches = int(sys.argv[4]) if len(sys.argv) > 4 else 20
    size = int(sys.argv[5]) if len(sys.argv) > 5 else 500
    key = Path(key_file).read_text().strip()
    cards = Path(cards_file).read_text().split()
    # No long digit runs in receipt ids: the API masks 13-19 digit Luhn-valid runs in free
    # text as card numbers, which would make receipts collide (duplicate_receipt).
    run = f"{int(time.time()):x}{random.randrange(16**4):04x}"
    parts = urlsplit(url)
    headers = {"Authorization": f"Api-Key {key}", "Content-Type": "application/json"}

    bodies = []  # built before the clock starts: the till has them ready
    for b in range(batches):
        items = []
        for i in range(size):
            ref = f"OFF-{run}b{b}i{i}"
            items.append({
                "idempotency_key": f"K-{ref}",
                "kind": "purchase",
                "payload": purchase_body(random.choice(cards), f"R-{ref}"),
            })  # fmt: skip
        bodies.append(json.dumps({"items": items}))

    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    ok, bad, sample, per_batch = 0, 0, "", []
    started = time.monotonic()
    for body in bodies:
        t0 = time.monotonic()
        conn.request("POST", "/api/v1/batches", body=body, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        per_batch.append(time.monotonic() - t0)
        if response.status != 200:
            bad += size
            sample = sample or f"batch answered {response.status}: {raw[:300]!r}"
            continue
        for result in json.loads(raw)["results"]:
            if result["status"] == 201:
                ok += 1
            else:
                bad += 1
                sample = sample or f"item {result['status']}: {json.dumps(result)[:300]}"
    seconds = time.monotonic() - started
    conn.close()
    print(
        f"BATCH items={batches * size} ok={ok} errors={bad} seconds={seconds:.2f} "
        f"items_per_s={ok / seconds:.1f} slowest_batch_s={max(per_batch):.2f}"
    )
    if sample:
        print(f"BATCH_SAMPLE_ERROR {sample}")
    return 0 if ok == batches * size else 1


if __name__ == "__main__":
    sys.exit(main())
