"""Packaging invariants: what an installed fastprop holds, and (in a source checkout only) that
the build configuration agrees with itself. The full wheel check is tools/check_wheel.py."""
import importlib
import importlib.metadata
import importlib.resources
import re
import sysconfig
from pathlib import Path

import numpy as np
import pytest

import fastprop

ROOT = Path(__file__).resolve().parents[1]
in_source_tree = pytest.mark.skipif(not (ROOT / "pyproject.toml").is_file(),
                                    reason="needs the source checkout (tests copied elsewhere)")


def _pyproject():
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_version_has_one_source():
    try:
        installed = importlib.metadata.version("fastprop")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("fastprop is imported from a path, not installed")
    assert installed == fastprop.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]|rc)?\d*(\.dev\d+)?", fastprop.__version__)


def test_installed_package_ships_its_data_files():
    files = importlib.resources.files("fastprop")
    for name in ("py.typed", "datasets/digits.npy.gz", "datasets/LICENSE-digits.txt"):
        assert files.joinpath(name).is_file(), name


def test_core_modules_are_compiled():
    import fastprop._core

    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    core = Path(fastprop._core.__path__[0])
    names = sorted(p.name[: -len(suffix)] for p in core.glob(f"*{suffix}"))
    assert names, f"no compiled modules in {core}"
    for name in names:
        assert importlib.import_module(f"fastprop._core.{name}").__file__.endswith(suffix)


@in_source_tree
def test_every_python_we_claim_is_built_and_tested():
    project = _pyproject()
    classifiers = {int(m) for c in project["project"]["classifiers"]
                   for m in re.findall(r"^Programming Language :: Python :: 3\.(\d+)$", c)}
    cibw = project["tool"]["cibuildwheel"]
    built = {int(m) for m in re.findall(r"cp3(\d+)-\*", cibw["build"])}
    assert classifiers == built
    floor = re.fullmatch(r">=3\.(\d+)", project["project"]["requires-python"]).group(1)
    assert int(floor) == min(built)
    # NumPy 1.26 has wheels up to CPython 3.12 only: the NumPy 1.x test must stay there.
    for override in cibw.get("overrides", []):
        if any("numpy==1." in r for r in override.get("test-requires", [])):
            assert all(int(m) <= 12 for m in re.findall(r"cp3(\d+)", override["select"]))


@in_source_tree
def test_license_files_exist():
    for name in _pyproject()["project"]["license-files"]:
        assert (ROOT / name).is_file(), name


@in_source_tree
def test_numpy_c_api_target_not_above_the_runtime_floor():
    """Wheels built against NumPy 2 import on any NumPy >= the C-API target they were built for:
    that target (NPY_TARGET_VERSION, or the headers' default) must not exceed the NumPy floor in
    project.dependencies, or users on the floor get an import error."""
    if np.lib.NumpyVersion(np.__version__) < "2.0.0":
        pytest.skip("the build uses NumPy >= 2; these headers are not the build's")
    deps = _pyproject()["project"]["dependencies"]
    floor = next(re.fullmatch(r"numpy>=(\d+)\.(\d+).*", d) for d in deps if d.startswith("numpy"))
    floor = (int(floor.group(1)), int(floor.group(2)))

    setup = (ROOT / "setup.py").read_text(encoding="utf-8")
    explicit = re.search(r"NPY_TARGET_VERSION[\"']\s*,\s*[\"']NPY_(\d+)_(\d+)_API_VERSION", setup)
    if explicit:
        target = (int(explicit.group(1)), int(explicit.group(2)))
    else:
        config = Path(np.get_include(), "numpy", "numpyconfig.h").read_text()
        default = re.search(r"#else\s*/\*[^*]*default[^*]*\*/\s*#define NPY_FEATURE_VERSION "
                            r"NPY_(\d+)_(\d+)_API_VERSION", config)
        assert default, "cannot find the default NPY_FEATURE_VERSION in numpyconfig.h"
        target = (int(default.group(1)), int(default.group(2)))
    assert target <= floor, (f"extensions target the NumPy {target} C-API but the runtime floor "
                             f"is numpy>={floor}: raise the floor or set NPY_TARGET_VERSION")
