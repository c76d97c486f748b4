#!/usr/bin/env bash
# Build fastprop's compiled core with AddressSanitizer + UndefinedBehaviorSanitizer and run tests
# on it, with the ASan runtime preloaded into the Python interpreter.
#
#   tools/sanitize.sh [WORKDIR] [-- PYTEST_ARGS...]
#
# WORKDIR (default: a fresh temporary directory) receives a copy of the source tree (tracked and
# untracked-but-not-ignored files of the current checkout, so uncommitted edits are included)
# and a fresh virtual environment; the normal install of the checkout is never touched.
# PYTEST_ARGS default to the whole suite (`tests`); the path is relative to the copy.
#
# The venv is deliberately created WITHOUT PyTorch (and without --system-site-packages): the
# sanitizer run checks fastprop's own C / Cython code, and a preloaded ASan runtime under
# torch's large native libraries (its own allocator hooks, MKL, OpenMP) is a source of reports
# that are not ours and of long start-up times. Tests needing torch skip there through
# pytest.importorskip; they run in the main CI job. SciPy (its OpenBLAS), NumPy, scikit-learn
# and hypothesis are installed, so every other test runs.
#
# Any sanitizer report fails the run: ASan halts on the first error (halt_on_error=1,
# abort_on_error=1), UBSan checks are compiled non-recoverable (-fno-sanitize-recover=undefined)
# and halt at run time too (halt_on_error=1); pytest then dies with a signal, which the exit
# status reports. Leak detection is off: CPython keeps allocations alive on purpose.
set -euo pipefail

# The body is one function, parsed whole before it runs: editing this file during a run is safe.
main() {
    src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    work="${1:-}"
    if [[ -z "$work" || "$work" == "--" ]]; then
        work="$(mktemp -d)"
    else
        shift
    fi
    [[ "${1:-}" == "--" ]] && shift
    pytest_args=("$@")
    [[ ${#pytest_args[@]} -eq 0 ]] && pytest_args=(tests)

    mkdir -p "$work"
    tree="$work/tree"
    venv="$work/venv"

    # 1. A copy of the tree (refreshed on every run), without build products of the normal
    # install. The sanitized build is redone only when what it is built from changed (a
    # content hash of src/, csrc/, setup.py, pyproject.toml, the flags and the compiler).
    san="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
    san="$san -fno-omit-frame-pointer -g"
    files() { (cd "$src" && git ls-files -z --cached --others --exclude-standard \
        | grep -zv -E '\.so$'); }   # generated .c files are ignored by git
    stamp="$(cd "$src" && files | grep -z -E '^(src/|csrc/|setup\.py$|pyproject\.toml$)' \
        | xargs -0 sha256sum | cat - <(echo "$san") <(gcc --version) | sha256sum | cut -d' ' -f1)"
    asan_rt="$(gcc -print-file-name=libasan.so)"
    ubsan_rt="$(gcc -print-file-name=libubsan.so)"
    for rt in "$asan_rt" "$ubsan_rt"; do
        [[ -f "$rt" ]] || { echo "sanitize.sh: sanitizer runtime $rt not found" >&2; exit 2; }
    done
    rm -rf "$tree"
    mkdir -p "$tree"
    (cd "$src" && files | xargs -0 tar cf -) | (cd "$tree" && tar xf -)
    if [[ "$(cat "$work/built" 2>/dev/null)" != "$stamp" ]]; then
        rm -f "$work/built"
        # 2. A fresh venv: build tools and the non-torch test dependencies.
        if [[ ! -x "$venv/bin/python" ]]; then
            python3 -m venv "$venv"
            "$venv/bin/python" -m pip install -q --upgrade pip
            "$venv/bin/python" -m pip install -q "setuptools>=77" "Cython>=3.1" "numpy>=2" scipy \
                pytest threadpoolctl hypothesis scikit-learn
        fi

        # 3. The sanitized build. CFLAGS come before setup.py's -O3 on the command line; the
        # instrumentation does not depend on the optimization level. FP_NO_CLONES is not set: the
        # AVX-512 / AVX2 / baseline clones are all instrumented and the CPU's one runs.
        # ASan + UBSan at -O3 compile slowly (minutes per module): one compiler per core.
        printf '[build_ext]\nparallel = %s\n' "$(nproc)" >> "$tree/setup.cfg"
        (cd "$tree" && CC="${CC:-gcc}" CFLAGS="$san" LDFLAGS="-fsanitize=address,undefined" \
            "$venv/bin/python" -m pip install -q --no-build-isolation --no-deps .)
        # Proof that the installed extensions are instrumented (a build that silently dropped
        # CFLAGS would pass every test and prove nothing).
        # (find_spec: importing the instrumented modules without the preload would fail)
        where='import importlib.util as u; print(u.find_spec("fastprop")
            .submodule_search_locations[0])'
        so_dir="$(cd / && "$venv/bin/python" -c "$where")/_core"
        n_so=0
        for so in "$so_dir"/*.so; do
            n_so=$((n_so + 1))
            # (no grep -q: it would close the pipe early, and pipefail would report nm's SIGPIPE)
            if ! nm -D "$so" | grep '__asan_init' > /dev/null; then
                echo "sanitize.sh: $so is not built with AddressSanitizer" >&2
                exit 2
            fi
        done
        [[ $n_so -gt 0 ]] || { echo "sanitize.sh: no extension modules in $so_dir" >&2; exit 2; }
        echo "$stamp" > "$work/built"
    fi

    # 4. The tests (the installed, instrumented package is imported: the copy has a src/
    # layout), ASan preloaded into the interpreter (libasan must be the first DSO), one BLAS
    # thread. allocator_may_return_null: a huge allocation raises MemoryError as without ASan
    # (tests check that) instead of ASan aborting.
    ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:allocator_may_return_null=1"
    export ASAN_OPTIONS="$ASAN_OPTIONS:detect_stack_use_after_return=0:print_summary=1:symbolize=1"
    export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1:print_summary=1"
    export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
    export PYTHONFAULTHANDLER=1
    cd "$tree"
    status=0
    # --capture=sys: pytest must not capture file descriptor 2, or a sanitizer report written
    # just before the abort would be lost with pytest's capture file.
    LD_PRELOAD="$asan_rt:$ubsan_rt" "$venv/bin/python" -m pytest -q -x -p no:cacheprovider \
        --capture=sys \
        --rootdir="$tree" "${pytest_args[@]}" || status=$?
    if [[ $status -ne 0 ]]; then
        echo "sanitize.sh: tests under ASan/UBSan failed (exit status $status)" >&2
    fi
    exit $status
}

main "$@"
