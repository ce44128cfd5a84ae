"""``make test``'s set-up step on a machine without what the tests need beyond Python
(Debian's Chromium for the browser tests, npm for the chart library): it installs them
with apt-get as .ci/run does, or says exactly what to install. Run through the real
Makefile; Chromium and apt-get are named by the Makefile's CHROMIUM and APT_GET, so that
"missing" can be told without uninstalling anything and no test reaches a package mirror.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
needs_npm = pytest.mark.skipif(shutil.which("npm") is None, reason="needs npm installed")


def make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "test-deps", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@needs_make
@needs_npm
def test_without_chromium_and_without_apt_get_it_says_what_to_install(tmp_path: Path) -> None:
    done = make(f"CHROMIUM={tmp_path}/chromium", f"APT_GET={tmp_path}/no-apt-get")

    assert done.returncode != 0
    assert "make test needs: chromium" in done.stderr
    assert "sudo apt-get install --no-install-recommends chromium" in done.stderr
    assert "make check" in done.stderr


@needs_make
@needs_npm
def test_with_chromium_and_npm_there_it_does_nothing(tmp_path: Path) -> None:
    done = make(f"CHROMIUM={sys.executable}", f"APT_GET={tmp_path}/no-apt-get")

    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == ("", "")


@needs_make
@needs_npm
@pytest.mark.skipif(os.geteuid() != 0, reason="installs only as root")
def test_as_root_with_apt_get_it_installs_chromium_as_ci_does(tmp_path: Path) -> None:
    # apt-get itself would reach Debian's mirrors: a stand-in records what it was asked
    calls = tmp_path / "calls"
    apt_get = tmp_path / "apt-get"
    apt_get.write_text(f'#!/bin/sh\necho "$DEBIAN_FRONTEND $*" >> {calls}\n')
    apt_get.chmod(0o755)

    done = make(f"CHROMIUM={tmp_path}/chromium", f"APT_GET={apt_get}")

    assert done.returncode == 0, done.stderr
    assert "installing chromium (apt-get)" in done.stdout
    assert calls.read_text().splitlines() == [
        "noninteractive update",
        "noninteractive install -y --no-install-recommends chromium",
    ]
