#!/usr/bin/env bash
# Installs what the test suite needs beyond cargo: netcat-openbsd (a real `nc` chats), socat
# (the client the README recommends for noticing the server's close), prometheus (`promtool
# check metrics` validates the metrics endpoint's output), for the fault suite's
# network-namespace tests iproute2 (`ip`) and nftables (`nft`), and for the real-IRC-client
# tests (tests/clients) irssi, tmux (which irssi runs in), weechat-headless and
# weechat-plugins (WeeChat's FIFO plugin, which the test types through), systemd
# (`systemd-analyze verify` checks contrib/linechat.service; it runs offline, without systemd
# as PID 1, so a container is enough), for the TLS tests openssl (which also makes their
# certificates), ncat and python3 (its ssl module), for the web client's browser tests
# (tests/browser) chromium, a font to render with, node and npm, then npm's playwright-core
# (the version in tests/browser/package-lock.json; it drives Debian's chromium and downloads
# no browser of its own), and nats-server (the broker the cluster tests in tests/cluster start
# with JetStream; Debian's is 2.9). Safe to run again; does nothing when everything is
# present. The tests that need them fail rather than skip in CI (CI set) when something is
# missing; the namespace tests also need root.
set -euo pipefail

need=()
command -v nc >/dev/null 2>&1 || need+=(netcat-openbsd)
command -v socat >/dev/null 2>&1 || need+=(socat)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v ncat >/dev/null 2>&1 || need+=(ncat)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v irssi >/dev/null 2>&1 || need+=(irssi)
command -v tmux >/dev/null 2>&1 || need+=(tmux)
command -v weechat-headless >/dev/null 2>&1 || need+=(weechat-headless)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v nats-server >/dev/null 2>&1 || need+=(nats-server)
# Debian ships the FIFO plugin in weechat-plugins (irc and logger come with weechat-core).
compgen -G '/usr/lib/*/weechat/plugins/fifo.so' >/dev/null ||
  compgen -G '/usr/lib/weechat/plugins/fifo.so' >/dev/null || need+=(weechat-plugins)

[ -x /usr/bin/chromium ] || need+=(chromium)
compgen -G '/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf' >/dev/null || need+=(fonts-dejavu-core)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "test-deps: please install ${need[*]} (the tests that need them will be skipped)" >&2
  else
    echo "test-deps: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # --no-install-recommends: promtool is all the tests use, not the server's web assets;
    # the IRC clients need no scripting plugins.
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi

browser="$(dirname "$0")/../tests/browser"
if [ ! -d "$browser/node_modules/playwright-core" ] && command -v npm >/dev/null 2>&1; then
  echo "test-deps: installing playwright-core for the browser tests" >&2
  npm ci --prefix "$browser" --no-audit --no-fund --loglevel=error >/dev/null
fi
