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
