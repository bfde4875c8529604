#!/usr/bin/env bash
# Live check of the Grafana dashboard and the alerting rules against a real Prometheus scraping a real hub
# (see live_check.py). Runs with the project's venv (it imports the hub's test partners and bench helpers).
#
#   deploy/prometheus/live-check.sh              embedded hub store
#   deploy/prometheus/live-check.sh --redis      the hub on Redis at 127.0.0.1:6379 (unique key prefix, removed)
#
# Exit 0: passed, or SKIP (no prometheus/promtool and not installable); 1: a query or rule failed; 2: harness error.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-$REPO/.venv/bin/python}"
[[ -x "$PY" ]] || { echo "live-check: no $PY (make install-dev first, or set PYTHON)" >&2; exit 2; }
exec "$PY" "$REPO/deploy/prometheus/live_check.py" "$@"
