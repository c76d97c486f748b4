"""Training step, fastprop against the pure-NumPy reference: float32, 1 BLAS thread.

    python benchmarks/bench_train.py [--budget 5] [--json FILE] [--plot FILE.png] [...]

The table of ``python -m fastprop bench`` restricted to the training step of the nets tiny,
small, medium and large, fastprop (``model.train_step``) vs ``ReferenceModel.train_step``, with
the GEMM floor of the same step for scale. Both are first checked against a float64 oracle and
timed interleaved in one process; see benchmarks/README.md. Any extra option is passed on to
the full command (a later ``--nets`` or ``--dtypes`` overrides the defaults here).
"""
import sys

from fastprop._bench import main

DEFAULTS = ["--sections", "train", "--nets", "tiny,small,medium,large", "--dtypes", "float32",
            "--threads", "1", "--no-torch", "--no-sklearn"]

if __name__ == "__main__":
    sys.exit(main(DEFAULTS + sys.argv[1:]))
