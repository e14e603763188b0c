"""Shared fixtures: one intra-op thread for modules of tiny-tensor tests; a headless Chromium for
the tests that check pages in a real browser; the fuzz's count of bad inputs and the fault
tests' count of faults at the end of a session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    on tiny tensors extra threads only spin, 10x slower on a busy 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _install_chromium() -> str | None:
    """Install Debian's chromium with apt-get; the reason it failed, or None."""
    if not shutil.which("apt-get"):
        return "apt-get not available"
    if os.geteuid() != 0:
        return "not root, cannot apt-get install chromium"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        for cmd in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "chromium"],
        ):
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
                return f"{' '.join(cmd)} failed: {tail[0]}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"apt-get failed: {exc}"
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    """The path of a working headless chromium; installed with apt-get when absent, else skip."""
    binary = str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")
    if binary is None:
        reason = _install_chromium()
        if reason:
            pytest.skip(f"chromium not available: {reason}")
        binary = str(CHROMIUM)
    try:
        proc = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"chromium does not start: {exc}")
    if proc.returncode != 0 or "Chromium" not in proc.stdout:
        pytest.skip(f"chromium does not start: {proc.stderr.strip()[-200:]}")
    return binary


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """How many inputs tests/test_fuzz.py tried (the README's "bad inputs tried") and how many
    faults tests/test_faults.py injected (its "faults injected")."""
    faults = getattr(sys.modules.get("tests.test_faults"), "INJECTED", None)
    if faults:
        ends = Counter(code for _, _, code in faults)
        kinds = len({fault for _, fault, _ in faults})
        terminalreporter.write_line(
            f"faults injected: {len(faults)} command runs against {kinds} kinds of fault; "
            f"exit codes {dict(sorted(ends.items()))}"
        )
    fuzz = sys.modules.get("tests.test_fuzz")
    tried = getattr(fuzz, "TRIED", None)
    if tried:
        refused = fuzz.REFUSED
        per_test = ", ".join(f"{k} {n}" for k, n in sorted(tried.items()))
        terminalreporter.write_line(
            f"bad inputs tried: {sum(tried.values())} ({sum(refused.values())} refused with an "
            f"error, the rest valid after all): {per_test}"
        )
