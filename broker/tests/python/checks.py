"""Assertions shared by the Python client test scripts: a failure says what was expected and
what came back."""


class Failure(Exception):
    """A broken expectation: the message says what was expected and what came back."""


def check(condition, message):
    if not condition:
        raise Failure(message)


def check_eq(actual, expected, what):
    if actual != expected:
        raise Failure("%s: expected %r, got %r" % (what, expected, actual))
