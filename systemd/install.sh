#!/usr/bin/env bash
# Installs mos-agent as a service: a venv in /opt/mos-agent, the system user `mos-agent` (in
# dialout for serial ports), the unit file, and an example configuration in /etc/mos-agent when
# none is there. Run as root from a checkout: sudo systemd/install.sh
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
prefix="${MOS_AGENT_PREFIX:-/opt/mos-agent}"
[ "$(id -u)" -eq 0 ] || { echo "run as root (sudo $0)" >&2; exit 2; }

python3 -c 'import venv, ensurepip' 2>/dev/null || { apt-get update -qq; apt-get install -y -qq python3-venv; }
[ -x "$prefix/venv/bin/python" ] || python3 -m venv "$prefix/venv"
"$prefix/venv/bin/pip" install -q --upgrade pip
"$prefix/venv/bin/pip" install -q "$here"

getent group mos-agent >/dev/null || groupadd --system mos-agent
id mos-agent >/dev/null 2>&1 || useradd --system --gid mos-agent --groups dialout \
  --home-dir /var/lib/mos-agent --no-create-home --shell /usr/sbin/nologin mos-agent

install -d -m 0750 -o root -g mos-agent /etc/mos-agent /etc/mos-agent/devices
if [ ! -f /etc/mos-agent/agent.yaml ]; then
  sed -e 's#state_dir: .*#state_dir: /var/lib/mos-agent#' "$here/configs/agent.yaml" > /etc/mos-agent/agent.yaml
  cp "$here"/configs/devices/*.yaml /etc/mos-agent/devices/
  chgrp -R mos-agent /etc/mos-agent; chmod 0640 /etc/mos-agent/agent.yaml /etc/mos-agent/devices/*.yaml
  echo "example configuration written to /etc/mos-agent (edit it, then: mos-agent validate)"
fi
sed -e "s#/opt/mos-agent#$prefix#g" "$here/systemd/mos-agent.service" > /etc/systemd/system/mos-agent.service
ln -sf "$prefix/venv/bin/mos-agent" /usr/local/bin/mos-agent
systemctl daemon-reload
echo "installed. next: edit /etc/mos-agent, 'mos-agent validate -c /etc/mos-agent/agent.yaml',"
echo "then 'systemctl enable --now mos-agent' and 'mos-agent status'"
