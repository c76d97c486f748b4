#!/usr/bin/env bash
# CI job: the compiled core built with AddressSanitizer + UndefinedBehaviorSanitizer
# (-fsanitize=address,undefined, UB non-recoverable), the ASan runtime preloaded into Python,
# then the whole test suite on it, the hostile-input tests included: tests/test_fuzz_api.py
# (its forked workers inherit the preloaded runtime; a larger budget here than in the main job)
# and the bad-input tests of every module. Any sanitizer report aborts the process and fails
# the job. Runs from the repo root inside the venv .ci/run activated; builds into its own venv
# and copy of the tree (tools/sanitize.sh), so the normal install is untouched. That venv has
# no PyTorch (see tools/sanitize.sh): the torch oracle tests skip here and run in the main job.
# Measured from scratch on 2 loaded cores: 4 min 11 s (venv, ASan build, 66 s of tests).
# FASTPROP_SAN_DIR keeps the venv and build between runs (a rerun rebuilds only on changes).
set -euo pipefail
if [[ -n "${FASTPROP_SAN_DIR:-}" ]]; then
    work="$FASTPROP_SAN_DIR"
else
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
fi
FASTPROP_FUZZ_EXAMPLES="${FASTPROP_FUZZ_EXAMPLES:-500}" bash tools/sanitize.sh "$work"
