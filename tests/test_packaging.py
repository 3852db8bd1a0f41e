"""An installed psjax is the same psjax: the presets (``psjax/configs/*.yaml``, the only files the package reads at
run time) ship in the wheel and are found from any working directory, as after Colab's ``pip install "git+URL"``."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tomllib
import zipfile

from psjax.schema import CONFIG_DIR, preset_names

REPO = pathlib.Path(__file__).resolve().parent.parent

# Run by the installed copy: no repository path on sys.path, psjax imported from the target folder.
PROBE = """
import json, sys
repo = sys.argv[1]
sys.path[:] = [p for p in sys.path if p and p.rstrip("/") != repo]  # the checkout (a virtualenv in it stays)
import psjax
from psjax.schema import preset_names
assert psjax.__file__.startswith(sys.argv[2]), psjax.__file__
names = preset_names()
loaded = {name: psjax.make_config({}, preset=name).alg for name in names}
print(json.dumps({"file": psjax.__file__, "presets": names, "loaded": loaded}))
"""


def test_every_preset_is_package_data():
    """Fast half: pyproject.toml's package-data globs cover every preset, and presets live inside the package."""
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["psjax"]
    package = REPO / "psjax"
    shipped = {p for g in globs for p in package.glob(g)}
    assert CONFIG_DIR.resolve() == (package / "configs").resolve()
    assert preset_names() and all(CONFIG_DIR / f"{n}.yaml" in shipped for n in preset_names())
    assert not (REPO / "configs").exists(), "a second preset folder at the root would drift from psjax/configs"


def test_wheel_installed_outside_the_repo_loads_every_preset(tmp_path):
    """Build the wheel from a copy of the sources (no stale build/ folder can leak files in), install it into a
    fresh target, and load every preset from a working directory outside the repository."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "psjax", src / "psjax", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheels, target, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)], check=True,
                   cwd=tmp_path, timeout=300)
    (wheel,) = wheels.glob("psjax-*.whl")
    with zipfile.ZipFile(wheel) as z:
        assert {f"psjax/configs/{n}.yaml" for n in preset_names()} <= set(z.namelist())
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True, cwd=tmp_path,
                   timeout=300)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(target), JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", PROBE, str(REPO), str(target)], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["presets"] == preset_names()
    assert set(result["loaded"]) == set(preset_names())
