"""Reads the junit XML of an irctest run and prints one row per module (passed, failed,
skipped, xfailed) and the totals; exits non-zero when the run misses the bar.

    summary.py JUNIT.xml --min-pass-rate 97.3 --min-passed 90 [--expect "72 passed, ..."]

The pass rate is passed / (passed + failed); errors (a test that broke in setup or teardown)
count as failed. With --expect, the bar is shown but the verdict is whether the totals equal
the expected line exactly (used to check the harness against the ngIRCd baseline).
"""

import argparse
from collections import defaultdict
import sys
import xml.etree.ElementTree as ET

COLUMNS = ("passed", "failed", "skipped", "xfailed")


def outcome(case: ET.Element) -> str:
    for child in case:
        if child.tag in ("failure", "error"):
            return "failed"
        if child.tag == "skipped":
            return "xfailed" if child.get("type") == "pytest.xfail" else "skipped"
    return "passed"


def totals_line(t: dict) -> str:
    return ", ".join(f"{t[c]} {c}" for c in COLUMNS)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("junit")
    p.add_argument("--min-pass-rate", type=float, required=True, help="percent")
    p.add_argument("--min-passed", type=int, required=True)
    p.add_argument("--expect", default="")
    p.add_argument("--label", default="")
    a = p.parse_args()

    rows = defaultdict(lambda: dict.fromkeys(COLUMNS, 0))
    failed_names = []
    for case in ET.parse(a.junit).getroot().iter("testcase"):
        parts = case.get("classname", "").split(".")
        module = parts[2] if len(parts) > 2 and parts[1] == "server_tests" else parts[-1]
        o = outcome(case)
        rows[module][o] += 1
        if o == "failed":
            failed_names.append(f"{module}.py::{parts[-1]}::{case.get('name')}")

    total = dict.fromkeys(COLUMNS, 0)
    width = max([len(m) for m in rows] + [len("module"), len("total")])
    header = f"{'module':<{width}}  " + "  ".join(f"{c:>7}" for c in COLUMNS)
    print(f"\nirctest results{(' — ' + a.label) if a.label else ''}")
    print(header)
    print("-" * len(header))
    for module in sorted(rows):
        print(f"{module:<{width}}  " + "  ".join(f"{rows[module][c]:>7}" for c in COLUMNS))
        for c in COLUMNS:
            total[c] += rows[module][c]
    print("-" * len(header))
    print(f"{'total':<{width}}  " + "  ".join(f"{total[c]:>7}" for c in COLUMNS))
    for name in failed_names:
        print(f"  failed: {name}")

    ran = total["passed"] + total["failed"]
    rate = 100.0 * total["passed"] / ran if ran else 0.0
    bar_met = ran > 0 and rate >= a.min_pass_rate and total["passed"] >= a.min_passed
    print(
        f"\npass rate {rate:.3f} % ({total['passed']} of {ran}); bar: >= {a.min_pass_rate} % "
        f"and >= {a.min_passed} passed: {'MET' if bar_met else 'MISSED'}"
    )
    line = totals_line(total)
    if a.expect:
        same = line == a.expect.strip()
        print(f"expected totals: {a.expect.strip()}: {'REPRODUCED' if same else 'DIFFERENT'}")
        print(f"irctest: {line}")
        return 0 if same else 1
    print(f"irctest: {line}")
    return 0 if bar_met else 1


if __name__ == "__main__":
    sys.exit(main())
