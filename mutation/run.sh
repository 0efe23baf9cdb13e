#!/usr/bin/env bash
# Reproduces docs/mutation.md: mutation/run.sh [SESSION ...] (default: all five sessions, in this order).
# Needs cosmic-ray in the environment (pip install -e ".[mutation]"); PYTHON picks the interpreter
# (default .venv/bin/python). Sessions are kept in mutation/sessions/ (delete one to start it again);
# an interrupted run continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export PATH="$(cd "$(dirname "$PY")" && pwd):$PATH" OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} PYTHONDONTWRITEBYTECODE=1
SOCK=/tmp/vaekit-mutation.sock
mkdir -p mutation/sessions
python mutation/forkserver.py "$SOCK" &
server=$!
trap 'kill "$server"' EXIT
while [ ! -S "$SOCK" ]; do sleep 0.2; done
for s in "${@:-estimators estimates likelihoods state_check loop}"; do
  for name in $s; do
    db=mutation/sessions/$name.sqlite
    if [ ! -e "$db" ]; then
      cosmic-ray init "mutation/$name.toml" "$db"
      cr-filter-operators "$db" "mutation/$name.toml"
      if grep -q '^\[cosmic-ray.filters.line-filter\]' "mutation/$name.toml"; then
        cr-filter-lines --config "mutation/$name.toml" "$db"
      fi
      python mutation/filter_annotations.py "$db"
    fi
    cosmic-ray exec "mutation/$name.toml" "$db"
    cr-report "$db" | tail -4
  done
done
