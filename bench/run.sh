#!/usr/bin/env bash
# POS API benchmark (bench/README.md): gunicorn on PostgreSQL, 100,000 members, wrk posting
# purchases with unique idempotency keys, a 20 x 500 offline batch sync, and the database
# ceiling: pgbench running the very statements one purchase executes.
# Reports figures; fails (exit 1) only when a request errs or the setup breaks.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BENCH=$ROOT/bench
PY=${PY:-$(bash "$BENCH/venv.sh")}   # a release-built Python, as servers run (venv.sh)
GUNICORN=${GUNICORN:-$(dirname "$PY")/gunicorn}

MEMBERS=${BENCH_MEMBERS:-100000}
CONNECTIONS=${BENCH_CONNECTIONS:-8}      # concurrent tills: wrk connections = pgbench clients
WRK_THREADS=${BENCH_WRK_THREADS:-2}
WARMUP=${BENCH_WARMUP:-5}                # seconds, not counted
DURATION=${BENCH_DURATION:-30}           # seconds of measured load
BATCHES=${BENCH_BATCHES:-20}
BATCH_SIZE=${BENCH_BATCH_SIZE:-500}
PGBENCH_SECONDS=${BENCH_PGBENCH_SECONDS:-15}
# Gunicorn: one sync worker per core. A purchase is CPU-bound Python (the database waits
# are short), so more processes only add switching: measured on the 2-core machine at 8
# connections, sync x3-5 (5 = 2*cores+1) was 5-10 % slower than sync x2, and gthread
# (2x4, 3x4, 5x2) too, with a worse p99 (GIL contention); keep-alive, which only gthread
# offers, did not make up for it (gthread x1 thread: no faster than sync). Granian's WSGI
# server measured no faster either. Override with BENCH_WORKERS etc.
WORKER_CLASS=${BENCH_WORKER_CLASS:-sync}
WORKERS=${BENCH_WORKERS:-$(nproc)}
GTHREADS=${BENCH_GTHREADS:-4}            # only for BENCH_WORKER_CLASS=gthread
DB=${BENCH_DB:-tally_bench}
OUT=${BENCH_OUT:-$ROOT/test-artifacts/bench}   # git-ignored: logs, scripts, card list

export PGHOST=127.0.0.1 PGPORT=5432 PGUSER=postgres
export DJANGO_SETTINGS_MODULE=config.settings.production
export SECRET_KEY=bench-only-not-a-secret
export ALLOWED_HOSTS=127.0.0.1
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB
export REDIS_URL=${BENCH_REDIS_URL:-redis://127.0.0.1:6379/0}
export API_RATE_LIMIT=100000000/min      # the per-key throttle must not be what we measure
export CONN_MAX_AGE=${BENCH_CONN_MAX_AGE:-60}  # persistent connections, as a deploy should
export LOG_LEVEL=ERROR                   # a 5xx still logs its traceback to gunicorn.log
export CELERY_BROKER_URL=""
export PYTHONWARNINGS="ignore:No directory at"  # whitenoise: no collectstatic needed here

log() { printf '\n== %s\n' "$*"; }
die() { printf '\nBENCH FAILED: %s\n' "$*" >&2; exit 1; }
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1" | head -n 1; }

GUNICORN_PID=""
stop_gunicorn() {
  [ -n "$GUNICORN_PID" ] || return 0
  if kill -0 "$GUNICORN_PID" 2>/dev/null; then
    kill -TERM -- "-$GUNICORN_PID" 2>/dev/null || kill -TERM "$GUNICORN_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$GUNICORN_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$GUNICORN_PID" 2>/dev/null || true
  fi
  wait "$GUNICORN_PID" 2>/dev/null || true
  GUNICORN_PID=""
}
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  stop_gunicorn
  if [ "${BENCH_KEEP_DB:-0}" != 1 ]; then
    dropdb --if-exists "$DB" >/dev/null 2>&1 || true
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. Tools -----------------------------------------------------------------------------
log "tools"
find_pgbench() {
  command -v pgbench 2>/dev/null && return 0
  ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | sort -V | tail -n 1 | grep . && return 0
  return 1
}
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
find_pgbench >/dev/null || need+=(postgresql-client)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! find_pgbench >/dev/null; then  # Debian 12 ships pgbench with the server package
  major=$(psql -tAc "SELECT current_setting('server_version_num')::int / 10000" postgres)
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-$major" >/dev/null
fi
PGBENCH=$(find_pgbench) || die "pgbench not found"
command -v wrk >/dev/null || die "wrk not found"
[ -x "$GUNICORN" ] || die "gunicorn not in the venv ($GUNICORN): run make install-dev"
pg_isready -q || die "PostgreSQL is not answering on 127.0.0.1:5432"
"$PY" -c "import redis, sys; redis.Redis.from_url(sys.argv[1]).ping()" "$REDIS_URL" \
  || die "Redis is not answering at $REDIS_URL"
PYTHON_VERSION=$("$PY" -c 'import sys; print(sys.version.split()[0], "from", sys.base_prefix)')
echo "python: $PYTHON_VERSION  wrk: $(command -v wrk)  pgbench: $PGBENCH  cores: $(nproc)"

# 2. Database --------------------------------------------------------------------------
log "database $DB: migrate, $MEMBERS members, store, terminal, API key"
rm -rf "$OUT" && mkdir -p "$OUT"
dropdb --if-exists "$DB"
createdb "$DB"
"$PY" manage.py migrate --noinput -v0
"$PY" "$BENCH/setup_db.py" "$OUT" "$MEMBERS"
KEY_FILE=$OUT/api_key.txt
CARDS=$OUT/cards.txt

log "capture the SQL of one purchase, make the pgbench script"
"$PY" "$BENCH/pgbench_script.py" "$OUT" "$MEMBERS"
STATEMENTS=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['statements'])" \
  "$OUT/capture.json")

# 3. Gunicorn --------------------------------------------------------------------------
PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
gunicorn_args=(config.wsgi:application --bind "127.0.0.1:$PORT" --workers "$WORKERS"
  --worker-class "$WORKER_CLASS" --timeout 120 --keep-alive 30 --log-level warning
  --error-logfile "$OUT/gunicorn.log")
[ "$WORKER_CLASS" = gthread ] && gunicorn_args+=(--threads "$GTHREADS")
log "gunicorn: $WORKERS $WORKER_CLASS workers$([ "$WORKER_CLASS" = gthread ] && echo " x $GTHREADS threads") on 127.0.0.1:$PORT"
setsid "$GUNICORN" "${gunicorn_args[@]}" </dev/null >>"$OUT/gunicorn.log" 2>&1 &
GUNICORN_PID=$!
code=000
for _ in $(seq 100); do
  kill -0 "$GUNICORN_PID" 2>/dev/null || { cat "$OUT/gunicorn.log"; die "gunicorn exited"; }
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/api/v1/purchases" || true)
  [ "$code" = 401 ] && break
  sleep 0.3
done
[ "$code" = 401 ] || { cat "$OUT/gunicorn.log"; die "gunicorn did not answer (last: $code)"; }
psql -q -c CHECKPOINT "$DB"
MACHINE_MS=$("$PY" "$BENCH/machine_speed.py")  # the machine's phase, just before the load

# 4. wrk -------------------------------------------------------------------------------
URL=http://127.0.0.1:$PORT/api/v1/purchases
KEY=$(cat "$KEY_FILE")
RUN_ID=$(date +%s)
wrk_run() {  # seconds label
  wrk -t "$WRK_THREADS" -c "$CONNECTIONS" -d "${1}s" --timeout 10s \
    -s "$BENCH/purchase.lua" "$URL" -- "$KEY" "$CARDS" "$RUN_ID-$2" | tee "$OUT/wrk-$2.txt"
}
log "wrk warm-up: ${WARMUP} s, $CONNECTIONS connections"
wrk_run "$WARMUP" warmup >/dev/null
WARM=$(grep '^BENCH ' "$OUT/wrk-warmup.txt") || die "wrk warm-up printed no result"
[ "$(field "$WARM" non201)" = 0 ] || { grep BENCH "$OUT/wrk-warmup.txt"; die "errors during warm-up"; }
log "wrk: ${DURATION} s, $CONNECTIONS connections, $WRK_THREADS threads"
# CPU per process while wrk runs (it must still be running at the second snapshot):
# from 2 s in to 2 s before the end, as CPU seconds per second, divided by the rate below.
wrk_run "$DURATION" main >/dev/null &
WRK_PID=$!
SAMPLE=$((DURATION > 6 ? DURATION - 4 : 1))
sleep 2
"$PY" "$BENCH/cpu_split.py" snapshot >"$OUT/cpu-before.json"
sleep "$SAMPLE"
"$PY" "$BENCH/cpu_split.py" snapshot >"$OUT/cpu-after.json"
wait "$WRK_PID"
cat "$OUT/wrk-main.txt"
WRK=$(grep '^BENCH ' "$OUT/wrk-main.txt") || die "wrk printed no result"
RPS=$(field "$WRK" rps)
CPU=$("$PY" "$BENCH/cpu_split.py" per-request "$OUT/cpu-before.json" "$OUT/cpu-after.json" \
  "$(awk -v r="$RPS" -v s="$SAMPLE" 'BEGIN { printf "%d", r * s }')")
WRK_ERRORS=$(($(field "$WRK" non201) + $(field "$WRK" connect_errors) + $(field "$WRK" read_errors) \
  + $(field "$WRK" write_errors) + $(field "$WRK" timeouts)))

# 5. Offline batch sync ----------------------------------------------------------------
log "offline batch sync: $BATCHES sequential batches of $BATCH_SIZE purchases"
BATCH_STATUS=0
"$PY" "$BENCH/batch_sync.py" "http://127.0.0.1:$PORT" "$KEY_FILE" "$CARDS" "$BATCHES" \
  "$BATCH_SIZE" | tee "$OUT/batch.txt" || BATCH_STATUS=$?
BATCH=$(grep '^BATCH ' "$OUT/batch.txt") || die "batch sync printed no result"
# Tracebacks while serving count as failures; gunicorn's own noise while it shuts down
# (a logging "reentrant call" on SIGTERM) does not.
SERVED_LINES=$(wc -l <"$OUT/gunicorn.log")
stop_gunicorn  # the ceiling gets the whole machine, as the API run had
SERVER_ERRORS=$(head -n "$SERVED_LINES" "$OUT/gunicorn.log" | grep -c 'Traceback' || true)
if [ "$SERVER_ERRORS" != 0 ]; then
  echo "gunicorn logged $SERVER_ERRORS tracebacks:"; grep -B2 -A20 -m 3 Traceback "$OUT/gunicorn.log"
fi

# 6. Ceiling: pgbench running one purchase's statements --------------------------------
log "pgbench: check that one scripted transaction writes what one API purchase writes"
"$PY" "$BENCH/pgbench_script.py" --verify "$OUT" "$PGBENCH"
log "pgbench: ${PGBENCH_SECONDS} s, $CONNECTIONS clients, $STATEMENTS statements a transaction"
"$PGBENCH" -n -M prepared -c "$CONNECTIONS" -j 2 -T "$PGBENCH_SECONDS" -f "$OUT/purchase.pgbench" \
  "$DB" 2>&1 | tee "$OUT/pgbench.txt" || die "pgbench failed"
TPS=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$OUT/pgbench.txt" \
  | awk '{ printf "%.1f", $1 }')
PG_LAT=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' "$OUT/pgbench.txt")
PG_FAILED=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$OUT/pgbench.txt")
[ -n "$TPS" ] || die "no tps in pgbench output"
[ "${PG_FAILED:-0}" = 0 ] || die "pgbench: $PG_FAILED failed transactions"

# 7. Summary ---------------------------------------------------------------------------
RATIO=$(awk -v a="$RPS" -v b="$TPS" 'BEGIN { printf "%.2f", a / b }')
cat <<EOF | tee "$OUT/summary.txt"

==================== Tally POS API bench ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores) ====================
setup        : $MEMBERS members; Python $PYTHON_VERSION; gunicorn $WORKERS $WORKER_CLASS workers$([ "$WORKER_CLASS" = gthread ] && echo " x $GTHREADS threads"), CONN_MAX_AGE=$CONN_MAX_AGE; wrk $WRK_THREADS threads x $CONNECTIONS connections, ${DURATION} s
purchases/s  : $RPS   (target >= 500)
latency ms   : p50 $(field "$WRK" p50_ms)  p95 $(field "$WRK" p95_ms)  p99 $(field "$WRK" p99_ms)  max $(field "$WRK" max_ms)   (target p99 <= 50)
errors       : $WRK_ERRORS   (non-201 $(field "$WRK" non201), socket $(($(field "$WRK" connect_errors) + $(field "$WRK" read_errors) + $(field "$WRK" write_errors))), timeouts $(field "$WRK" timeouts); statuses $(field "$WRK" statuses))
requests     : $(field "$WRK" requests) in $(field "$WRK" seconds) s
batch sync   : $(field "$BATCH" items) purchases in $(field "$BATCH" seconds) s ($(field "$BATCH" items_per_s)/s, slowest batch $(field "$BATCH" slowest_batch_s) s), errors $(field "$BATCH" errors)   (target <= 10 s)
cpu/purchase : app $(field "$CPU" app_ms) ms, PostgreSQL $(field "$CPU" postgres_ms), Redis $(field "$CPU" redis_ms), wrk $(field "$CPU" wrk_ms), other $(field "$CPU" other_ms); total $(field "$CPU" total_ms) ms of the $(awk -v c="$(nproc)" 'BEGIN { printf "%.1f", c * 1000 / 500 }') ms that $(nproc) cores give each of 500 purchases/s
db ceiling   : pgbench $TPS tps, latency avg $PG_LAT ms ($CONNECTIONS clients, $STATEMENTS statements/purchase)
ratio        : API/ceiling = $RATIO
machine      : $MACHINE_MS ms of CPU for a fixed Python workload (bench/machine_speed.py; more in a slow phase)
files        : $OUT
==========================================================================================
EOF
grep -h '_SAMPLE_ERROR' "$OUT/wrk-main.txt" "$OUT/batch.txt" || true
[ "$WRK_ERRORS" = 0 ] || die "$WRK_ERRORS purchase requests failed"
[ "$BATCH_STATUS" = 0 ] || die "the batch sync had errors"
[ "$SERVER_ERRORS" = 0 ] || die "the server logged $SERVER_ERRORS tracebacks ($OUT/gunicorn.log)"
echo "bench: done"
