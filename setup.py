"""Build the compiled core. Metadata lives in pyproject.toml; this file holds only the
extension list and the one set of Cython compiler directives for the whole build."""
import glob
import os

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTPROP_CYTHON_DEBUG") == "1"
TRACE = os.environ.get("FASTPROP_CYTHON_TRACE") == "1"  # line tracing, for coverage

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
    "linetrace": TRACE,
}
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")]
if TRACE:
    macros.append(("CYTHON_TRACE_NOGIL", "1"))
# -O3 lets gcc vectorize the branchless elementwise loops; -fno-math-errno lets it vectorize
# sqrt, -fno-trapping-math lets it if-convert selects such as leaky ReLU's (z > 0 ? z : 0.01 z
# stayed a branchy scalar loop without it); neither changes a value. -ffp-contract=off keeps FMA
# contraction out, so the AVX2 / AVX-512 clones of the C kernels (FP_CLONES, csrc/fp_template.h)
# compute exactly what the baseline does. Never -ffast-math (it
# breaks NaN / inf semantics) and never -march=native (wheels must run on any CPU).
compile_args = [] if os.name == "nt" else ["-O3", "-fno-math-errno", "-fno-trapping-math",
                                              "-ffp-contract=off"]


HEADERS = sorted(glob.glob("csrc/*.h"))


def ext(name):
    return Extension(
        f"fastprop._core.{name}",
        [f"src/fastprop/_core/{name}.pyx"],
        include_dirs=["csrc", np.get_include()],
        depends=HEADERS,      # an edit to a C header rebuilds the extensions that include it
        define_macros=macros,
        extra_compile_args=compile_args,
    )


EXTENSIONS = sorted(os.path.basename(p)[:-4] for p in glob.glob("src/fastprop/_core/*.pyx"))

setup(ext_modules=cythonize([ext(name) for name in EXTENSIONS], compiler_directives=directives,
                          include_path=["src"]))
