#!/usr/bin/env bash
# `make irctest`: the irctest conformance suite (vendored, read-only, in ../shared/vendor/irctest
# from the repository root) against linechat's IRC listener, or against ngIRCd for the baseline.
#
#   make irctest                          # linechat (target/release/linechat, built if needed)
#   IRCTEST_SERVER=ngircd make irctest    # the same subset against ngIRCd (installed if missing)
#   LINECHAT_BIN=path/to/linechat make irctest
#
# Runs the client-to-server subset and markers named in the vendored README, prints a table per
# module and the totals, and exits non-zero when the bar is missed: a pass rate
# passed / (passed + failed) of at least IRCTEST_MIN_PASS_RATE percent with at least
# IRCTEST_MIN_PASSED tests passing. Against ngIRCd (which is below that bar) the verdict is instead
# whether the run reproduces the README's baseline totals, IRCTEST_EXPECT; set IRCTEST_EXPECT= to
# judge ngIRCd by the bar. Output: target/irctest/<server>.log and <server>.xml (junit).
# Nothing is written into the vendored tree (no bytecode, no pytest cache); the script checks.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

server=${IRCTEST_SERVER:-linechat}
vendor_rel=${IRCTEST_DIR:-../shared/vendor/irctest}
min_rate=${IRCTEST_MIN_PASS_RATE:-97.3}
min_passed=${IRCTEST_MIN_PASSED:-90}
base_modules="connection_registration pingpong join part names topic who messages quit regressions isupport buffering utf8 statusmsg websocket"
# Accounts and moderation (issue 15), for linechat only: ngIRCd's baseline below is for the
# base modules. chmodes/modeis and chmodes/no_external are left out: both turn `n` off, which
# linechat keeps on (TESTING.md, "IRC conformance").
moderation_modules="kick invite chmodes/ban chmodes/moderated chmodes/secret chmodes/operator sasl account_tag"
if [ "$server" = linechat ]; then
  modules=${IRCTEST_MODULES:-$base_modules $moderation_modules}
  # linechat's accounts are built in: the controller registers them (`registerUser`) over the
  # line protocol, so irctest's `services` tests (sasl, account_tag, and WHOX's account field
  # in who) run too. ngIRCd has no services.
  default_markers="not implementation-specific and not deprecated and not strict"
else
  modules=${IRCTEST_MODULES:-$base_modules}
  default_markers="not services and not implementation-specific and not deprecated and not strict"
fi
markers=${IRCTEST_MARKERS:-$default_markers}
test_timeout=${IRCTEST_TEST_TIMEOUT:-60}  # seconds per test (pytest-timeout)
run_timeout=${IRCTEST_RUN_TIMEOUT:-1200}  # seconds for the whole pytest run
venv=$root/target/irctest-venv
out=$root/target/irctest

if ! vendor=$(cd "$vendor_rel" 2>/dev/null && pwd); then
  echo "irctest: the vendored suite is not at $vendor_rel (from $root); set IRCTEST_DIR" >&2
  exit 2
fi
mkdir -p "$out"

# --- the server under test -------------------------------------------------------------
case $server in
  linechat)
    controller=linechat_controller
    expect=${IRCTEST_EXPECT-}
    if [ -z "${LINECHAT_BIN:-}" ]; then
      echo "irctest: cargo build --release --bin linechat" >&2
      cargo build --release --bin linechat
      export LINECHAT_BIN=$root/target/release/linechat
    fi
    ;;
  ngircd)
    controller=irctest.controllers.ngircd
    expect=${IRCTEST_EXPECT-72 passed, 2 failed, 28 skipped, 2 xfailed}
    if ! command -v ngircd >/dev/null 2>&1; then
      if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "irctest: ngircd is not installed; install the Debian package ngircd" >&2
        exit 2
      fi
      echo "irctest: installing ngircd" >&2
      # The package would start a system-wide ngIRCd on port 6667; irctest starts its own, so
      # keep the init script from starting one (policy-rc.d exit 101 = "not allowed").
      added_policy=
      if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        added_policy=1
      fi
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends ngircd >/dev/null || {
        [ -n "$added_policy" ] && rm -f /usr/sbin/policy-rc.d
        exit 2
      }
      [ -n "$added_policy" ] && rm -f /usr/sbin/policy-rc.d
    fi
    ;;
  *)
    echo "irctest: IRCTEST_SERVER must be linechat or ngircd, not '$server'" >&2
    exit 2
    ;;
esac

# --- the virtualenv: only touched when the requirements changed ----------------------------
reqs=("$vendor/requirements.txt" "$root/tests/irctest/requirements.txt")
stamp_want=$(cat "${reqs[@]}" | sha256sum | cut -d' ' -f1)
stamp_file=$venv/.requirements.sha256
if [ ! -x "$venv/bin/python" ]; then
  echo "irctest: creating $venv" >&2
  python3 -m venv "$venv"
fi
if [ "$(cat "$stamp_file" 2>/dev/null)" != "$stamp_want" ] \
  || ! "$venv/bin/python" -c 'import pytest, pytest_timeout, ecdsa, filelock, websockets' 2>/dev/null; then
  echo "irctest: pip install -r ${reqs[*]}" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    -r "${reqs[0]}" -r "${reqs[1]}"
  echo "$stamp_want" >"$stamp_file"
fi

export PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH=$root/tests/irctest${PYTHONPATH:+:$PYTHONPATH}

# --- linechat: one start before 100 tests, so a binary that cannot serve IRC says so once ---
if [ "$server" = linechat ]; then
  if ! (cd "$vendor" && PYTHONPATH=$vendor:$PYTHONPATH timeout -k 5 60 "$venv/bin/python" "$root/tests/irctest/linechat_controller.py" --check); then
    echo "irctest: linechat did not serve IRC (see above); not running the suite" >&2
    exit 2
  fi
fi

# --- the run ------------------------------------------------------------------------------
files=()
for m in $modules; do
  files+=("irctest/server_tests/$m.py")
done
marker_file=$out/.started-$server
touch "$marker_file"
log=$out/$server.log
xml=$out/$server.xml
rm -f "$xml"
echo "irctest: $server, ${#files[@]} modules, -m \"$markers\" (log: ${log#"$root"/})" >&2
started=$(date +%s)
set +e
# SIGINT first so pytest tears the current test down (and kills its server); SIGKILL 30 s later.
(cd "$vendor" && timeout -s INT -k 30 "$run_timeout" "$venv/bin/python" -m pytest \
  -p no:cacheprovider --timeout "$test_timeout" \
  --controller "$controller" -m "$markers" \
  --junitxml "$xml" -o junit_logging=no -q -rfE \
  ${IRCTEST_PYTEST_ARGS:-} "${files[@]}") >"$log" 2>&1
rc=$?
set -e
elapsed=$(( $(date +%s) - started ))
# pytest's own summary line, for comparison with the table.
grep -E '^(=+ )?[0-9]+ (passed|failed).* in [0-9.]+s' "$log" | tail -n1 || true
if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
  echo "irctest: the run exceeded IRCTEST_RUN_TIMEOUT=${run_timeout}s and was stopped" >&2
fi
if [ ! -s "$xml" ]; then
  echo "irctest: pytest exited $rc without results; the end of $log:" >&2
  tail -n 30 "$log" >&2
  exit 1
fi

written=$(find "$vendor" -newer "$marker_file" -print -quit 2>/dev/null || true)
rm -f "$marker_file"
if [ -n "$written" ]; then
  echo "irctest: something was written into the vendored tree: $written" >&2
  exit 1
fi

set +e
"$venv/bin/python" "$root/tests/irctest/summary.py" "$xml" \
  --min-pass-rate "$min_rate" --min-passed "$min_passed" --expect "$expect" \
  --label "$server, ${elapsed} s"
verdict=$?
set -e
exit $verdict
