"""Assertions shared by the Python client test scripts: a failure says what was expected and
what came back."""

import sys
import time


class Failure(Exception):
    """A broken expectation: the message says what was expected and what came back."""


def check(condition, message):
    if not condition:
        raise Failure(message)


def check_eq(actual, expected, what):
    if actual != expected:
        raise Failure("%s: expected %r, got %r" % (what, expected, actual))


def run_case(cases, name):
    """Runs cases[name]: prints "ok" with its duration, or "FAILED" with the broken
    expectation. Returns the process exit status."""
    started = time.monotonic()
    try:
        cases[name]()
    except Failure as e:
        sys.stderr.write("FAILED %s: %s\n" % (name, e))
        return 1
    print("ok %s in %.1f s" % (name, time.monotonic() - started))
    return 0


def main(module):
    """The command line of a case script: `SCRIPT BOOTSTRAP CASE`. Sets the script's
    BOOTSTRAP, runs the case named `case_<CASE>` and returns the exit status."""
    cases = {name[len("case_"):]: fn for name, fn in vars(module).items() if name.startswith("case_")}
    if len(sys.argv) != 3 or sys.argv[2] not in cases:
        sys.stderr.write("usage: %s BOOTSTRAP CASE\ncases: %s\n" % (sys.argv[0], " ".join(sorted(cases))))
        return 2
    module.BOOTSTRAP = sys.argv[1]
    return run_case(cases, sys.argv[2])
