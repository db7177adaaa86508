#!/usr/bin/env python3
"""Set up and run headwater from a fresh clone with nothing but python3.

    python3 dev.py demo     # create .venv, install, run the embedded demo
    python3 dev.py test     # create .venv, install, run every check (ruff, mypy, pytest)
    python3 dev.py run ...  # any headwater command inside the project's environment

The environment is reinstalled only when one of BUILD_INPUTS changes: pyproject.toml,
setup.py, or the sources of a compiled module (the feature kinds and pass with their
.pxd files, the readers of records and the JSON guard).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".headwater-installed"
#: What the installation is built from: a change to any of them reinstalls.
BUILD_INPUTS = (
    "pyproject.toml",
    "setup.py",
    "src/headwater/features/_kinds.py",
    "src/headwater/features/_kinds.pxd",
    "src/headwater/features/_pass.py",
    "src/headwater/features/_pass.pxd",
    "src/headwater/_jsonguard/_compiled.pyx",
    "src/headwater/archive/_columns.pyx",
    "src/headwater/features/_records.pyx",
    "src/headwater/features/_records.pxd",
    "src/headwater/features/_rows.pyx",
    "src/headwater/_msgpack.pxd",
    "src/headwater/bus/_batch.pyx",
    "src/headwater/bus/_batch.pxd",
)


def _python() -> str:
    return str(BIN / "python")


def ensure_environment() -> None:
    """Create .venv and install headwater with every extra, when needed."""
    digest = hashlib.sha256(b"".join((ROOT / p).read_bytes() for p in BUILD_INPUTS)).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest and (BIN / "headwater").exists():
        return
    if not (BIN / "python").exists():
        print("creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = [_python(), "-m", "pip", "--disable-pip-version-check", "-q"]
    print("installing headwater and its dependencies into .venv ...", flush=True)
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", "-e", f"{ROOT}[all,spark,dev]"], check=True, cwd=ROOT)
    STAMP.write_text(digest)


def run(args: list[str]) -> int:
    """Run a command from the project's environment and return its exit code."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(VENV)
    return subprocess.run(args, cwd=ROOT, env=env, check=False).returncode


def check(pytest_args: list[str]) -> int:
    """Every check, in order; the first failure stops the run with its exit code."""
    steps = [
        ["ruff", "check", "src", "tests", "bench", "dev.py", "setup.py"],
        ["ruff", "format", "--check", "src", "tests", "bench", "dev.py", "setup.py"],
        ["mypy"],
        [_python(), "-m", "pytest", *pytest_args],
    ]
    for step in steps:
        print(f"$ {' '.join(step)}", flush=True)
        code = run(step)
        if code != 0:
            print(f"check failed: {' '.join(step)} (exit {code})", flush=True)
            return code
    return 0


def main(argv: list[str]) -> int:
    """Dispatch ``demo``, ``test``, ``check`` or ``run``."""
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    ensure_environment()
    if command == "demo":
        return run([str(BIN / "headwater"), "demo", *rest])
    if command in ("test", "check"):
        return check(rest)
    if command == "run":
        return run([str(BIN / "headwater"), *rest])
    print(f"unknown command {command!r}; use demo, test or run", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
