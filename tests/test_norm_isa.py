"""The AVX-512, AVX2 and baseline builds of the normalization kernels (csrc/fp_norm.h) give
bit-identical results: tests/c/norm_kernels.c built once per instruction set the CPU has, with
setup.py's flags and the build helpers of tests/test_isa_clones.py."""
import hashlib
import os
import shutil
import subprocess

import pytest

import test_isa_clones as isa

pytestmark = isa.pytestmark


def _run(tmp_path, name, isa_flags):
    exe = str(tmp_path / name)
    cc = shutil.which("gcc") or "cc"
    subprocess.run([cc, *isa.FLAGS, *isa_flags, "-I", isa.CSRC,
                    os.path.join(isa.ROOT, "tests", "c", "norm_kernels.c"), "-o", exe, "-lm"],
                   check=True, capture_output=True)
    out = subprocess.run([exe], check=True, capture_output=True).stdout
    assert len(out) > 20_000
    return out


def test_every_isa_build_of_the_norm_kernels_gives_the_same_bytes(tmp_path):
    flags = isa._cpu_flags()
    builds = {"baseline": []}
    if "avx2" in flags:
        builds["avx2"] = ["-mavx2"]
    if "avx512f" in flags:
        builds["avx512f"] = ["-mavx512f"]
    if len(builds) == 1:
        pytest.fail("this CPU has neither AVX2 nor AVX-512: nothing to compare")
    digests = {name: hashlib.sha256(_run(tmp_path, name, f)).hexdigest()
               for name, f in builds.items()}
    assert len(set(digests.values())) == 1, digests
