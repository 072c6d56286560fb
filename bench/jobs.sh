#!/usr/bin/env bash
# Nightly jobs benchmark (bench/README.md, "Nightly jobs"): 1,000,000 members and
# 10,000,000 postings loaded with set-based SQL, then the nightly jobs timed with their
# peak memory next to the same writes in hand-written SQL (the lower bound).
# Reports figures; fails (exit 1) only when the setup breaks, a job fails, the jobs and
# the SQL disagree, or a ledger invariant does not hold afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BENCH=$ROOT/bench
PY=${PY:-$(bash "$ROOT/bench/venv.sh")}  # a release-built Python, as servers run (venv.sh)

MEMBERS=${BENCH_JOBS_MEMBERS:-1000000}
BATCH=${BENCH_JOBS_BATCH_SIZE:-5000}
DB=${BENCH_JOBS_DB:-tally_bench_jobs}
OUT=${BENCH_OUT:-$ROOT/test-artifacts/bench}/jobs
# The jobs' "now": the data is generated relative to it, so the run is the same any day.
NOW=${BENCH_JOBS_NOW:-$(date -u +%Y-%m-%dT03:00:00+00:00)}

export PGHOST=127.0.0.1 PGPORT=5432 PGUSER=postgres
export DJANGO_SETTINGS_MODULE=config.settings.production
export SECRET_KEY=bench-only-not-a-secret
export ALLOWED_HOSTS=127.0.0.1
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB
export CELERY_BROKER_URL=""
export JOBS_BATCH_SIZE=$BATCH
export LOG_LEVEL=WARNING
# Expiry notices are rendered and written to files (one per batch), not sent anywhere.
export EMAIL_BACKEND=django.core.mail.backends.filebased.EmailBackend
export EMAIL_URL=filemail://$OUT/mail
export PYTHONWARNINGS="ignore:No directory at"

log() { printf '\n== %s\n' "$*"; }
die() { printf '\nBENCH FAILED: %s\n' "$*" >&2; exit 1; }
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ "${BENCH_KEEP_DB:-0}" != 1 ]; then
    dropdb --if-exists "$DB" >/dev/null 2>&1 || true
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "tools"
pg_isready -q || die "PostgreSQL is not answering on 127.0.0.1:5432"
if [ ! -x /usr/bin/time ]; then  # peak memory of each job; falls back to the job's own figure
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null) \
    || echo "no /usr/bin/time: peak memory from the job's own report"
fi

log "database $DB: migrate, $MEMBERS members and $((MEMBERS * 10)) postings as of $NOW"
rm -rf "$OUT" && mkdir -p "$OUT/mail"
started=$(date +%s)
dropdb --if-exists "$DB"
createdb "$DB"
"$PY" manage.py migrate --noinput -v0
"$PY" "$BENCH/jobs_setup.py" "$OUT" "$MEMBERS" "$NOW" | tee "$OUT/setup.txt"
SETUP_SECONDS=$(($(date +%s) - started))
psql -q -c CHECKPOINT "$DB"

log "nightly jobs, $BATCH members a batch, against the hand-written SQL"
"$PY" "$BENCH/jobs_bench.py" "$OUT" "$NOW"

{
  echo
  echo "==================== Tally nightly jobs bench ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores) ===================="
  echo "setup        : $(tail -n 1 "$OUT/setup.txt") (whole setup with migrate: ${SETUP_SECONDS} s)"
  cat "$OUT/jobs-lines.txt"
  echo "files        : $OUT"
  echo "=================================================================================================="
} | tee "$OUT/summary.txt"
echo "bench jobs: done"
