"""What a user gets from ``pip install`` of the built wheel, in fresh virtual environments.

A base install runs ``headwater --help`` and the producer SDK; an install with only
``[server]`` runs what needs nothing more and names the missing extra for the rest
(never a raw ``ModuleNotFoundError``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(args: list[str], *, cwd: Path | None = None, timeout: float = 600) -> str:
    done = subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)])
    (found,) = out.glob("headwater-*.whl")
    return found


def _venv(where: Path, requirement: str) -> Path:
    venv.EnvBuilder(with_pip=True).create(where)
    bin_ = where / "bin"
    _run([str(bin_ / "python"), "-m", "pip", "install", "-q", requirement])
    return bin_


@pytest.fixture(scope="module")
def base(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _venv(tmp_path_factory.mktemp("base") / "venv", str(wheel))


@pytest.fixture(scope="module")
def server(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _venv(tmp_path_factory.mktemp("server") / "venv", f"{wheel}[server]")


def _headwater(bin_: Path, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    env["HEADWATER_HOME"] = str(home)
    return subprocess.run(
        [str(bin_ / "headwater"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def test_a_base_install_runs_the_cli_and_the_sdk(base: Path, tmp_path: Path) -> None:
    shown = _headwater(base, "--help", home=tmp_path / "hw")
    assert shown.returncode == 0, shown.stderr
    assert "consume" in shown.stdout
    probe = (
        "import sys, headwater.client as c\n"
        "c.HeadwaterClient; c.AsyncHeadwaterClient; c.FeatureClient\n"
        "server = [m for m in sys.modules if m.split('.')[0] in "
        "('fastapi', 'yaml', 'typer', 'prometheus_client')\n"
        "          or m.startswith(('headwater.contract', 'headwater.features'))]\n"
        "assert not server, server\n"
    )
    _run([str(base / "python"), "-c", probe])
    # The feature consumer needs nothing beyond the base install.
    consumed = _headwater(base, "consume", "features", "--until-idle", home=tmp_path / "hw")
    assert consumed.returncode == 0, consumed.stderr
    # The gateway needs the server extra: the error says which.
    served = _headwater(base, "serve", home=tmp_path / "hw")
    assert served.returncode == 1
    assert "pip install 'headwater[server]'" in served.stderr
    assert "Traceback" not in served.stderr


def test_a_server_install_names_the_archive_extra(server: Path, tmp_path: Path) -> None:
    up = _headwater(server, "up", home=tmp_path / "hw")
    assert up.returncode == 1
    assert "pip install 'headwater[archive]'" in up.stderr, up.stderr
    assert "Traceback" not in up.stderr
    archive = _headwater(server, "consume", "archive", "--until-idle", home=tmp_path / "hw")
    assert archive.returncode == 1
    assert "pip install 'headwater[archive]'" in archive.stderr, archive.stderr
