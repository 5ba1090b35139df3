#!/usr/bin/env bash
# Installs the Debian tools the tests need when they are missing: poppler-utils (pdfsig,
# pdftoppm), Chromium and docker-compose (only to check docker/compose.yaml with `config`; no daemon). Needs root (or sudo); without it, says what is missing and goes on
# (the tests that need a tool skip with that reason only when SKIP_SYSTEM_TOOLS=1).
set -u
want=()
command -v pdfsig >/dev/null 2>&1 || want+=(poppler-utils)
command -v certutil >/dev/null 2>&1 || want+=(libnss3-tools)
command -v chromium >/dev/null 2>&1 || want+=(chromium)
{ command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1; } || want+=(docker-compose)
[ ${#want[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}" >/dev/null \
    || { echo "apt-get install ${want[*]} failed" >&2; exit 1; }
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo apt-get update -qq >/dev/null && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}" >/dev/null
else
  echo "missing system packages (install them as root): ${want[*]}" >&2
  exit 1
fi
