#!/usr/bin/env bash
# CI job: the compiled core built with AddressSanitizer + UndefinedBehaviorSanitizer
# (-fsanitize=address,undefined, UB non-recoverable), the ASan runtime preloaded into Python,
# then the whole test suite on it — the hostile-input tests included: tests/test_fuzz_api.py
# (its worker subprocesses inherit the preloaded runtime), the bad-input tests of each module —
# and the API fuzzer once more with a larger budget. Any sanitizer report aborts the process and
# fails the job. Runs from the repo root inside the venv .ci/run activated; builds into its own
# venv and copy of the tree (tools/sanitize.sh), so the normal install is untouched. That venv
# has no PyTorch (see tools/sanitize.sh): the torch oracle tests skip here and run in the main
# job. About 10-15 minutes on 2 busy cores (ASan makes the suite ~2-3x slower).
set -euo pipefail
work="${FASTPROP_SAN_DIR:-$(mktemp -d)}"
bash tools/sanitize.sh "$work"
FASTPROP_FUZZ_EXAMPLES=300 bash tools/sanitize.sh "$work" -- tests/test_fuzz_api.py
