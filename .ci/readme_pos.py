"""Run the README's "Integrating a POS" curl examples, as written, against a running
`make run` and check that a POS developer gets what the README promises:

    python3 .ci/readme_pos.py README.md http://127.0.0.1:8765

The block runs in bash with `curl` wrapped to log each answer; the README's placeholders
(`<purchase id>`, `<redemption id>`) take the ids the earlier answers gave. The block then
runs a second time, as a till retrying everything: each write must answer the same again,
marked as a replay (a batch, item by item). Exits 1 with the reason on the first broken
promise. Standard library only: CI runs it with the system Python.
"""

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

# The statuses the block's calls answer, in order (lookup, enrol, quote, purchase, return,
# pay with points, void, batch).
EXPECTED = [200, 201, 200, 201, 201, 201, 200, 200]

WRAPPER = r"""
set -euo pipefail
LOG=%(log)s
json_id() { python3 -c 'import json, sys; print(json.loads(sys.argv[1]).get("id", ""))' "$1"; }
curl() {
  local out
  out=$(command curl -sS -D %(headers)s -w '\n%%{http_code}' "$@")
  local status=${out##*$'\n'} body=${out%%$'\n'*}
  python3 - "$status" "$body" %(headers)s "$*" >>"$LOG" <<'PY'
import json, sys
status, body, headers, args = sys.argv[1:]
replayed = "idempotent-replayed: true" in open(headers).read().lower()
print(json.dumps({"status": int(status), "body": body, "replayed": replayed, "args": args}))
PY
  case "$*" in
    *"/purchases -H"*) PURCHASE_ID=$(json_id "$body") ;;
    *"/redemptions -H"*) REDEMPTION_ID=$(json_id "$body") ;;
  esac
}
"""


def pos_block(readme: str) -> str:
    section = readme.split("## Integrating a POS", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```sh\n(.*?)```", section, re.S)
    if not found:
        sys.exit("README: no sh block in 'Integrating a POS'")
    return found.group(1)


def run_block(block: str, base: str, workdir: Path, tag: str) -> list[dict]:
    log = workdir / f"{tag}.jsonl"
    block = block.replace("http://127.0.0.1:8000", base)
    block = block.replace("<purchase id>", "$PURCHASE_ID").replace(
        "<redemption id>", "$REDEMPTION_ID"
    )
    script = WRAPPER % {"log": log, "headers": workdir / "headers.txt"} + block
    subprocess.run(["bash", "-c", script], check=True)
    return [json.loads(line) for line in log.read_text().splitlines()]


def fail(why: str, call: dict | None = None) -> None:
    print(f"README POS examples: {why}")
    if call:
        print(f"  curl {call['args'][:200]}\n  -> {call['status']} {call['body'][:400]}")
    sys.exit(1)


def main() -> None:
    readme, base = Path(sys.argv[1]).read_text(), sys.argv[2].rstrip("/")
    block = pos_block(readme)
    with tempfile.TemporaryDirectory() as tmp:
        first = run_block(block, base, Path(tmp), "first")
        again = run_block(block, base, Path(tmp), "again")
    if [c["status"] for c in first] != EXPECTED:
        bad = next(
            (c for c, want in zip(first, EXPECTED, strict=False) if c["status"] != want), None
        )
        fail(f"statuses {[c['status'] for c in first]}, expected {EXPECTED}", bad)
    quote, purchase = json.loads(first[2]["body"]), json.loads(first[3]["body"])
    if quote.get("points") != purchase.get("points_earned"):
        fail(f"the quote said {quote.get('points')} points, the purchase gave "
             f"{purchase.get('points_earned')}", first[3])  # fmt: skip
    batch = json.loads(first[7]["body"])
    if [item["status"] for item in batch["results"]] != [201]:
        fail("the batch's sale was not recorded", first[7])
    for before, retried in zip(first, again, strict=True):
        if "Idempotency-Key" not in retried["args"] and "/batches" not in retried["args"]:
            continue  # a read, or the quote (which writes nothing)
        if retried["status"] != before["status"] or retried["body"] != before["body"]:
            fail("a retried POST did not answer as the first time", retried)
        if not retried["replayed"] and "/batches" not in retried["args"]:
            fail("a retried POST is not marked Idempotent-Replayed", retried)
    print(f"README POS examples: {len(first)} calls as promised, and each retry replayed")


if __name__ == "__main__":
    main()
