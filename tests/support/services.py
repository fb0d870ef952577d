"""What tests that need a real service share: failing loudly in CI when it is missing, waiting for it."""

import os
import time

import pytest


def in_ci() -> bool:
    """Whether this is a CI run: CI set to anything but empty, 0 or false (CI=true, CI=1, CI=True...)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def unavailable(message: str) -> None:
    """A service a test needs is missing: a failure in CI, where a skip would hide a broken setup;
    a skip on a developer's machine that lacks the service."""
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def wait_for(predicate, timeout: float = 60.0, message: str = "timed out"):
    """The first truthy value of `predicate()`, polled every 50 ms; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, message
        time.sleep(0.05)
    return value
