#!/usr/bin/env bash
# Installs what the test suite needs beyond cargo: netcat-openbsd, for the test that a real `nc`
# can chat. Safe to run again; does nothing when everything is present.
set -euo pipefail

need=()
command -v nc >/dev/null 2>&1 || need+=(netcat-openbsd)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "test-deps: please install ${need[*]} (the netcat test will be skipped)" >&2
  exit 0
fi
echo "test-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}" >/dev/null
