#!/usr/bin/env bash
# Installs what the test suite needs beyond cargo: netcat-openbsd, for the test that a real `nc`
# can chat, and prometheus, whose `promtool check metrics` validates the metrics endpoint's
# output. Safe to run again; does nothing when everything is present.
set -euo pipefail

need=()
command -v nc >/dev/null 2>&1 || need+=(netcat-openbsd)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "test-deps: please install ${need[*]} (the tests needing them will be skipped)" >&2
  exit 0
fi
echo "test-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# --no-install-recommends: promtool is all the tests use, not the server's web assets.
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
