#!/usr/bin/env bash
# One command per job on a fresh Debian-based machine (root or sudo, Python 3.11+):
#   ./setup.sh demo    install what the demo needs, then run `mos-agent demo`
#   ./setup.sh test    install what the tests need (Mosquitto, VictoriaMetrics, socat, chromium), then run them
#   ./setup.sh bench   install like test, then run the benchmarks (bench/run.py; --quick for 2 minutes)
# Extra arguments go to the command (pytest, mos-agent demo, bench/run.py).
set -euo pipefail
cd "$(dirname "$0")"
job="${1:-}"; shift || true
case "$job" in demo|test|bench) ;; *) echo "usage: ./setup.sh demo|test|bench [args...]" >&2; exit 2 ;; esac

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
VENV="${MOS_AGENT_VENV:-.venv}"

need_debs=()
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null || need_debs+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_debs+=(python3-venv)
if [ "$job" != demo ]; then
  command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need_debs+=(mosquitto)
  command -v victoria-metrics >/dev/null || need_debs+=(victoria-metrics)
  command -v socat >/dev/null || need_debs+=(socat)
  # the status page's browser tests (Playwright drives this chromium; no browser download)
  [ -x /usr/bin/chromium ] || need_debs+=(chromium)
  # a Korean font, so the Korean page's screenshots show Hangul rather than empty boxes
  { command -v fc-list >/dev/null && [ -n "$(fc-list :lang=ko 2>/dev/null)" ]; } || need_debs+=(fonts-nanum)
fi
if [ ${#need_debs[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need_debs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_debs[@]}" >/dev/null
fi
# The Debian service units of these servers are not ours to run: tests start their own copies.
for svc in mosquitto victoria-metrics; do
  if command -v systemctl >/dev/null && systemctl is-enabled "$svc" >/dev/null 2>&1; then
    $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
  fi
done

stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)-$job"
if [ ! -f "$stamp" ]; then
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
  extras="test"; [ "$job" = demo ] && extras="demo-broker"
  "$VENV/bin/pip" install -q -e ".[$extras]"
  rm -f "$VENV"/.installed-*-"$job"; touch "$stamp"
fi

# The Sparkplug tests decode with an independent codec (Eclipse Tahu's JavaScript sparkplug-payload,
# pinned in tests/sparkplug_js/package-lock.json); without Node.js those tests skip and say why.
if [ "$job" = test ] && command -v node >/dev/null && command -v npm >/dev/null; then
  js=tests/sparkplug_js
  js_stamp="$js/node_modules/.installed-$(sha256sum "$js/package-lock.json" | cut -c1-16)"
  if [ ! -f "$js_stamp" ]; then
    (cd "$js" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) && touch "$js_stamp"
  fi
fi

case "$job" in
  demo)  exec "$VENV/bin/mos-agent" demo "$@" ;;
  test)  exec "$VENV/bin/python" -m pytest "$@" ;;
  bench) exec "$VENV/bin/python" bench/run.py "$@" ;;
esac
