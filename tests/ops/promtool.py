"""``promtool check metrics`` (Debian's ``prometheus`` package, ``make system``) on a running
service's ``/metrics``."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.services.conftest import http


def require_promtool() -> None:
    """Skip without promtool; fail in CI, which must run the check."""
    if shutil.which("promtool") is None:
        message = "promtool is not installed (make system, or apt-get install prometheus)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)


def promtool_check(url: str) -> None:
    """Assert that promtool finds neither a format error nor a lint problem."""
    status, text = http("GET", url + "/metrics")
    assert status == 200
    done = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                          capture_output=True, timeout=30)
    problems = (done.stdout + done.stderr).decode().strip()
    assert done.returncode == 0 and problems == "", problems
    assert "libreco_requests_total" in text
