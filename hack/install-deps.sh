#!/usr/bin/env bash
# Install the system services wsfleet's tests and local fleet use (Debian).
# Idempotent: installs only what is missing. Never starts the services:
# tests and `wsfleet up` start their own on free ports.
set -euo pipefail
IFS=$'\n\t'

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)  # bench --instructions; its test
# The dashboard's browser test drives Debian's headless Chromium.
if [[ "${WSFLEET_WITHOUT_BROWSER:-0}" != "1" ]]; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
fi

if [[ ${#need[@]} -eq 0 ]]; then
  exit 0
fi

if [[ "$(id -u)" -ne 0 ]]; then
  SUDO=sudo
else
  SUDO=
fi
# shellcheck disable=SC2086
mapfile -t uniq < <(printf '%s\n' "${need[@]}" | sort -u)
echo "install-deps: installing ${uniq[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${uniq[@]}" >/dev/null
# Debian's packages enable the services; wsfleet runs its own instances.
for svc in redis-server prometheus; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    $SUDO systemctl stop "$svc" || true
  fi
done
