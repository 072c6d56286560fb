#!/usr/bin/env bash
# Prints the Python the benches run the app on, after making its venv if needed.
#
# A server runs a release build of Python: the distribution's, or the official Docker
# image's, both built with profile-guided optimisation and LTO. pyenv builds without
# them unless asked, and on the 2-core bench machine such a build spent 5-10 % more CPU
# on a purchase (run side by side): a bench on it would count the interpreter against
# the app. So the benches get their own venv (.venv-bench) from BENCH_PYTHON, else the
# system's /usr/bin/python3 when it is 3.11 or newer and can make a venv, else the
# project's venv.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

usable() {  # interpreter
  [ -x "$1" ] && "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' \
    2>/dev/null
}

BASE=${BENCH_PYTHON:-}
if [ -z "$BASE" ] && usable /usr/bin/python3; then
  BASE=/usr/bin/python3
fi
if [ -z "$BASE" ]; then
  echo "$ROOT/.venv/bin/python"  # make install-dev made it
  exit 0
fi
usable "$BASE" || { echo "BENCH_PYTHON=$BASE is not Python 3.11+ with venv" >&2; exit 1; }

VENV=$ROOT/.venv-bench
STAMP=$VENV/.installed
WANT="$("$BASE" -c 'import sys; print(sys.executable, sys.version.split()[0])') $(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  rm -rf "$VENV"
  "$BASE" -m venv "$VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
  "$VENV/bin/python" -m pip install --quiet -e . >&2
  echo "$WANT" >"$STAMP"
fi
echo "$VENV/bin/python"
