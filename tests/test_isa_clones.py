"""The AVX-512, AVX2 and baseline builds of the C kernels give bit-identical results.

The extension modules carry all three (FP_CLONES in csrc/fp_template.h) and the loader picks
one per CPU, so a model must not compute differently on another machine. This builds
tests/c/isa_kernels.c once per instruction set the CPU here can run, with setup.py's flags,
and compares the raw outputs of every cloned kernel.
"""
import hashlib
import os
import platform
import shutil
import subprocess
import sysconfig

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")
FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off", "-DFP_NO_CLONES"]

pytestmark = pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64") or not os.path.isdir(CSRC)
    or not (shutil.which(sysconfig.get_config_var("CC") or "") or shutil.which("gcc")),
    reason="the clones exist on x86-64 only; needs the source tree and a C compiler")


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _run(tmp_path, name, isa_flags):
    exe = str(tmp_path / name)
    cc = shutil.which("gcc") or (sysconfig.get_config_var("CC") or "cc").split()[0]
    subprocess.run([cc, *FLAGS, *isa_flags, "-I", CSRC,
                    os.path.join(ROOT, "tests", "c", "isa_kernels.c"), "-o", exe, "-lm"],
                   check=True, capture_output=True)
    out = subprocess.run([exe], check=True, capture_output=True).stdout
    assert len(out) > 100_000
    return out


def test_every_isa_build_of_the_kernels_gives_the_same_bytes(tmp_path):
    flags = _cpu_flags()
    builds = {"baseline": []}
    if "avx2" in flags:
        builds["avx2"] = ["-mavx2"]
    if "avx512f" in flags:
        builds["avx512f"] = ["-mavx512f"]
    outputs = {name: _run(tmp_path, name, f) for name, f in builds.items()}
    digests = {name: hashlib.sha256(out).hexdigest() for name, out in outputs.items()}
    assert len(set(digests.values())) == 1, digests
    if len(builds) == 1:
        pytest.fail("this CPU has neither AVX2 nor AVX-512: nothing to compare")
