#!/usr/bin/env bash
# What CI can validate of deploy/ on a machine without a Docker engine.
#
#   deploy/check.sh                 every part
#   deploy/check.sh yaml compose    only those parts
#
# Parts:
#   yaml       every YAML/JSON file under deploy/ parses (compose, k8s, prometheus, grafana)
#   compose    `docker compose config` (v2, or v1's docker-compose) with deploy/.env.example as deploy/.env (also
#              with the docker-compose.sentinel.yml override), and
#              that it refuses to run without HUB_ADMIN_TOKEN. Debian's docker-compose is installed with apt-get
#              when no compose CLI exists (root + apt-get; DEPLOY_CHECK_NO_APT=1 forbids it); without any, a
#              structural check in Python (not compose's schema)
#   kustomize  `kubectl kustomize deploy/k8s` (and deploy/k8s/sentinel) with secret.example.yaml standing in for secret.yaml (needs kubectl)
#   promtool   `promtool check rules` on alerts.yml and `check config` on prometheus.yml (needs promtool)
#   haproxy    `haproxy -c` on deploy/haproxy/haproxy.cfg (needs haproxy)
#   image      the Dockerfile's commands without Docker: a clean venv, the build stage's COPY lines laid out,
#              `pip install .`, `ocpi-hub --help`, then `ocpi-hub serve` on a free port probed with the
#              Dockerfile's exact HEALTHCHECK command (also /readyz, /metrics, clean exit on SIGTERM)
#
# An optional tool that is missing makes its part SKIPPED (said why), not failed. Every part runs even after a
# failure (no `set -e`); the exit status is 1 when any check failed.
set -uo pipefail

DEPLOY="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$DEPLOY")"
ALL_PARTS=(yaml compose kustomize promtool haproxy image)
PARTS=("$@")
[[ ${#PARTS[@]} -eq 0 ]] && PARTS=("${ALL_PARTS[@]}")

CHECKED=()
SKIPPED=()
FAILED=()
WORK="$(mktemp -d "${TMPDIR:-/tmp}/deploy-check.XXXXXX")"
SERVE_PID=""
cleanup() {
  if [[ -n "$SERVE_PID" ]] && kill -0 "$SERVE_PID" 2>/dev/null; then kill "$SERVE_PID" 2>/dev/null; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf '%s\n' "$*"; }
ok() { CHECKED+=("$1"); say "ok: $1"; }
skip() { SKIPPED+=("$1 ($2)"); say "SKIPPED: $1: $2"; }
fail() { FAILED+=("$1"); say "FAILED: $1"; }

# A Python with PyYAML for deploy/checks.py: the project's venv when there is one.
PY=""
for candidate in "${PYTHON_WITH_YAML:-}" "$REPO/.venv/bin/python" python3; do
  if [[ -n "$candidate" ]] && "$candidate" -c 'import yaml' >/dev/null 2>&1; then PY="$candidate"; break; fi
done

# A clean environment for tools that read it (no HUB_* or COMPOSE_* of the caller leaks in).
clean_env() { env -i PATH="$PATH" HOME="${HOME:-/root}" LANG=C.UTF-8 "$@"; }

part_yaml() {
  say "== yaml: parse every manifest"
  if [[ -z "$PY" ]]; then fail "yaml: no Python with PyYAML (install the dev extras: pip install -e '.[dev]')"; return; fi
  if "$PY" "$DEPLOY/checks.py" yaml; then ok "yaml: every YAML/JSON file under deploy/ parses"; else fail "yaml"; fi
}

# A copy of the repository's deploy/ with the example env as .env (and the example Secret as secret.yaml):
# the files compose and kustomize insist on exist, and the operator's real ones are never touched.
stage_copy() {
  local dest="$WORK/stage"
  if [[ ! -d "$dest" ]]; then
    mkdir -p "$dest"
    cp -R "$DEPLOY" "$dest/deploy"
    rm -f "$dest/deploy/.env" "$dest/deploy/k8s/secret.yaml"
    cp "$DEPLOY/.env.example" "$dest/deploy/.env"
    cp "$DEPLOY/k8s/secret.example.yaml" "$dest/deploy/k8s/secret.yaml"
    # The compose file's build context (..) is then $dest itself: it exists, and `config` reads nothing from it.
  fi
  printf '%s' "$dest"
}

# The compose CLI, in COMPOSE (an array): DEPLOY_CHECK_COMPOSE when set, else Compose v2 (`docker compose`), else
# v1 (`docker-compose`), else Debian's docker-compose installed with apt-get (root only; DEPLOY_CHECK_NO_APT=1
# forbids it). None of them needs a Docker engine for `config`.
COMPOSE=()
find_compose() {
  if [[ -n "${DEPLOY_CHECK_COMPOSE:-}" ]]; then
    read -ra COMPOSE <<<"$DEPLOY_CHECK_COMPOSE"
    command -v "${COMPOSE[0]}" >/dev/null 2>&1; return
  fi
  if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); return 0; fi
  if command -v docker-compose >/dev/null 2>&1; then COMPOSE=(docker-compose); return 0; fi
  if [[ "${DEPLOY_CHECK_NO_APT:-0}" == 1 ]]; then return 1; fi
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then return 1; fi
  say "  no compose CLI: apt-get install -y docker-compose"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get install -y -qq docker-compose || { apt-get update -qq && apt-get install -y -qq docker-compose; }; } \
    >"$WORK/apt.log" 2>&1 || { tail -5 "$WORK/apt.log"; return 1; }
  command -v docker-compose >/dev/null 2>&1 && COMPOSE=(docker-compose)
}

part_compose() {
  say "== compose: deploy/docker-compose.yml with deploy/.env.example"
  local stage
  stage="$(stage_copy)"
  if find_compose; then
    local out="$WORK/compose-config.yml"
    if (cd "$stage" && clean_env "${COMPOSE[@]}" -f deploy/docker-compose.yml --env-file deploy/.env config) \
        >"$out" 2>"$WORK/compose.err"; then
      ok "compose: ${COMPOSE[*]} $("${COMPOSE[@]}" version --short 2>/dev/null) config accepts the file"
      say "  services: $(grep -E '^  [a-z0-9-]+:$' "$out" | head -20 | tr -d ' :' | paste -sd' ')"
    else
      cat "$WORK/compose.err"; fail "compose: ${COMPOSE[*]} config"
    fi
    if (cd "$stage" && clean_env "${COMPOSE[@]}" -f deploy/docker-compose.yml -f deploy/docker-compose.sentinel.yml \
        --env-file deploy/.env config) >"$out" 2>"$WORK/compose.err"; then
      ok "compose: config accepts docker-compose.yml with the docker-compose.sentinel.yml override"
    else
      cat "$WORK/compose.err"; fail "compose: config with docker-compose.sentinel.yml"
    fi
    # Fail-safe: with no admin token, compose must refuse (each replica would otherwise generate its own).
    grep -v '^HUB_ADMIN_TOKEN=' "$DEPLOY/.env.example" >"$stage/deploy/.env"
    if (cd "$stage" && clean_env "${COMPOSE[@]}" -f deploy/docker-compose.yml --env-file deploy/.env config) \
        >/dev/null 2>"$WORK/compose.err"; then
      fail "compose: config accepted an env file without HUB_ADMIN_TOKEN"
    elif grep -q 'set HUB_ADMIN_TOKEN in deploy/.env' "$WORK/compose.err"; then
      ok "compose: refuses an env file without HUB_ADMIN_TOKEN (\"set HUB_ADMIN_TOKEN in deploy/.env\")"
    else
      cat "$WORK/compose.err"; fail "compose: without HUB_ADMIN_TOKEN, config failed for another reason"
    fi
    cp "$DEPLOY/.env.example" "$stage/deploy/.env"
  else
    say "  no compose CLI (docker compose / docker-compose, not installable here): structural check in Python instead"
    if [[ -z "$PY" ]]; then fail "compose: no docker-compose and no Python with PyYAML"; return; fi
    if "$PY" "$DEPLOY/checks.py" compose-lint; then
      ok "compose: structural check (fallback, not docker-compose's schema)"
      skip "compose: compose config" "no docker compose / docker-compose"
    else
      fail "compose: structural check"
    fi
  fi
}

part_kustomize() {
  say "== kustomize: deploy/k8s"
  if ! command -v kubectl >/dev/null 2>&1; then skip "kustomize" "kubectl not installed"; return; fi
  local stage out="$WORK/k8s.yaml"
  stage="$(stage_copy)"
  if clean_env kubectl kustomize "$stage/deploy/k8s" >"$out" 2>"$WORK/kustomize.err"; then
    ok "kustomize: kubectl kustomize builds $(grep -c '^kind:' "$out") objects ($(grep '^kind:' "$out" | cut -d' ' -f2 | paste -sd' '))"
  else
    cat "$WORK/kustomize.err"; fail "kustomize: kubectl kustomize deploy/k8s"
  fi
  if clean_env kubectl kustomize "$stage/deploy/k8s/sentinel" >"$out" 2>"$WORK/kustomize.err"; then
    ok "kustomize: kubectl kustomize deploy/k8s/sentinel builds $(grep -c '^kind:' "$out") objects ($(grep '^kind:' "$out" | cut -d' ' -f2 | paste -sd' '))"
  else
    cat "$WORK/kustomize.err"; fail "kustomize: kubectl kustomize deploy/k8s/sentinel"
  fi
}

part_promtool() {
  say "== promtool: alerting rules and Prometheus config"
  if ! command -v promtool >/dev/null 2>&1; then
    skip "promtool" "promtool not installed (Debian package prometheus ships it)"; return
  fi
  if promtool check rules "$DEPLOY/prometheus/alerts.yml"; then ok "promtool: check rules alerts.yml"; else fail "promtool: check rules"; fi
  # prometheus.yml reads the hubs' /metrics token from a file compose writes when Prometheus starts: check a copy
  # whose credentials_file points at a stand-in (promtool insists that the file exists), alerts.yml beside it.
  local cfg="$WORK/prometheus"
  mkdir -p "$cfg" && cp "$DEPLOY/prometheus/alerts.yml" "$cfg/" && printf 'stand-in' > "$cfg/metrics-token"
  sed "s#/prometheus/metrics-token#$cfg/metrics-token#" "$DEPLOY/prometheus/prometheus.yml" > "$cfg/prometheus.yml"
  if grep -q "credentials_file: $cfg/metrics-token" "$cfg/prometheus.yml" && promtool check config "$cfg/prometheus.yml"
  then ok "promtool: check config prometheus.yml"; else fail "promtool: check config"; fi
}

part_haproxy() {
  say "== haproxy: deploy/haproxy/haproxy.cfg"
  if ! command -v haproxy >/dev/null 2>&1; then skip "haproxy" "haproxy not installed"; return; fi
  # Outside the compose network hub-1/hub-2 do not resolve: haproxy warns and still validates the file.
  if haproxy -c -f "$DEPLOY/haproxy/haproxy.cfg" >"$WORK/haproxy.out" 2>&1; then
    ok "haproxy: $(haproxy -v | head -1 | cut -d' ' -f1-3) -c accepts haproxy.cfg"
  else
    cat "$WORK/haproxy.out"; fail "haproxy: haproxy -c"
  fi
}

free_port() {
  "$1" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

part_image() {
  say "== image: the Dockerfile's commands, without Docker"
  local base="${PYTHON:-python3}"
  if ! "$base" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    fail "image: $base is not Python 3.11+ (set PYTHON=...)"; return
  fi
  if [[ -z "$PY" ]]; then fail "image: no Python with PyYAML for deploy/checks.py"; return; fi
  local src="$WORK/src" venv="$WORK/venv" started
  started=$(date +%s)
  # 1. What the build stage copies to /src (the COPY lines of deploy/Dockerfile, filtered like the context).
  mkdir -p "$src"
  if ! "$PY" "$DEPLOY/checks.py" copy-build-context "$src"; then fail "image: COPY lines"; return; fi
  # 2. RUN python -m venv /opt/venv && pip install --no-cache-dir .   (pip's cache allowed here: speed only)
  if ! "$base" -m venv "$venv"; then fail "image: python -m venv"; return; fi
  if ! (cd "$src" && PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/pip" install -q .) >"$WORK/pip.log" 2>&1; then
    tail -20 "$WORK/pip.log"; fail "image: pip install . in a clean venv"; return
  fi
  ok "image: pip install . from the COPY'd files into a clean venv ($(( $(date +%s) - started )) s, $("$venv/bin/python" -V))"
  # 3. The entrypoint.
  if "$venv/bin/ocpi-hub" --help >/dev/null && "$venv/bin/ocpi-hub" serve --help >/dev/null; then
    ok "image: ocpi-hub --help and ocpi-hub serve --help"
  else
    fail "image: ocpi-hub --help"; return
  fi
  # 4. ocpi-hub serve, as the container runs it (embedded store in the temp dir: no Redis or MongoDB needed).
  local port
  port="$(free_port "$venv/bin/python")"
  mkdir -p "$WORK/run"
  (cd "$WORK/run" && exec env -i PATH="$venv/bin:/usr/bin:/bin" HOME="$WORK/run" LANG=C.UTF-8 \
      HUB_HOST=127.0.0.1 HUB_PORT="$port" HUB_PUBLIC_URL="http://127.0.0.1:$port" \
      HUB_ADMIN_TOKEN="$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')" HUB_SQLITE_PATH="$WORK/run/hub.sqlite3" \
      "$venv/bin/ocpi-hub" serve) >"$WORK/serve.log" 2>&1 &
  SERVE_PID=$!
  # 5. The HEALTHCHECK, argument for argument; "python" is the venv's (PATH in the image points there too).
  local -a hc=()
  mapfile -t hc < <("$PY" "$DEPLOY/checks.py" healthcheck-cmd)
  [[ "${hc[0]:-}" == python ]] && hc[0]="$venv/bin/python"
  local healthy=0
  for _ in $(seq 1 60); do   # like --start-period: up to 30 s to come up
    if HUB_PORT="$port" "${hc[@]}" 2>/dev/null; then healthy=1; break; fi
    kill -0 "$SERVE_PID" 2>/dev/null || break
    sleep 0.5
  done
  if [[ $healthy -eq 1 ]]; then
    ok "image: ocpi-hub serve on 127.0.0.1:$port is healthy by the Dockerfile's HEALTHCHECK command"
  else
    cat "$WORK/serve.log"; fail "image: HEALTHCHECK against ocpi-hub serve"
  fi
  if [[ $healthy -eq 1 ]]; then
    if "$venv/bin/python" - "$port" <<'EOF'
import sys, urllib.request
port = sys.argv[1]
ready = urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5)
metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
assert ready.status == 200, ready.status
assert "ocpi_hub_" in metrics, "no ocpi_hub_ metric in /metrics"
print(f"  /readyz {ready.status}, /metrics {len(metrics.splitlines())} lines")
EOF
    then ok "image: /readyz 200 and /metrics exports ocpi_hub_*"; else fail "image: /readyz or /metrics"; fi
  fi
  # 6. docker stop sends SIGTERM: the hub must exit 0 well within the 30 s grace period.
  kill -TERM "$SERVE_PID" 2>/dev/null
  local rc=""
  for _ in $(seq 1 40); do
    if ! kill -0 "$SERVE_PID" 2>/dev/null; then wait "$SERVE_PID"; rc=$?; break; fi
    sleep 0.25
  done
  SERVE_PID=""
  if [[ "$rc" == 0 ]]; then ok "image: SIGTERM -> clean exit 0 within 10 s"; else
    tail -20 "$WORK/serve.log"; fail "image: exit on SIGTERM (status ${rc:-still running after 10 s})"
  fi
  # 7. And the HEALTHCHECK must report a stopped hub as unhealthy (it does not pass vacuously).
  if HUB_PORT="$port" "${hc[@]}" 2>/dev/null; then fail "image: HEALTHCHECK passed with no hub running"; else
    ok "image: HEALTHCHECK fails once the hub is stopped"
  fi
}

for part in "${PARTS[@]}"; do
  case "$part" in
    yaml | compose | kustomize | promtool | haproxy | image) "part_$part" ;;
    *) say "unknown part: $part (parts: ${ALL_PARTS[*]})"; exit 2 ;;
  esac
done

say ""
say "== summary"
for line in "${CHECKED[@]}"; do say "  checked: $line"; done
for line in "${SKIPPED[@]}"; do say "  skipped: $line"; done
for line in "${FAILED[@]}"; do say "  FAILED:  $line"; done
say "deploy/check.sh: ${#CHECKED[@]} checks passed, ${#FAILED[@]} failed, ${#SKIPPED[@]} skipped"
[[ ${#FAILED[@]} -eq 0 ]]
