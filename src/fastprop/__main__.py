"""Command line: ``python -m fastprop demo``, ``explain`` and ``bench``.

``demo`` trains a small network on the bundled UCI handwritten digits with a progress bar,
prints the test accuracy and wall time, then trains the same network from the same weights on
the same minibatches with the pure-NumPy reference and prints the speed ratio. ``explain`` trains
the demo network for a few epochs, traces one minibatch (``fastprop.trace``), prints its summary
and writes the block picture, the computational graph and the learning curves as PNG and SVG.
"""
import argparse
import sys
import time

import numpy as np

from fastprop._demo import _demo_model, _digits_split, _reference_fit


def demo(args):
    import fastprop as fp
    from fastprop.reference import ReferenceModel

    Xtr, ytr, Xte, yte = _digits_split(args.seed)
    print(f"fastprop {fp.__version__} demo: UCI optical handwritten digits (8x8), "
          f"{len(ytr)} training and {len(yte)} test images, {args.dtype}")
    model = _demo_model(args.seed, args.dtype)
    ref = ReferenceModel.from_model(model)          # same initial weights, before training
    model.summary()
    t0 = time.perf_counter()
    history = model.fit(Xtr, ytr, epochs=args.epochs, batch_size=args.batch_size,
                        validation_split=0.1, verbose=1)
    t_fp = time.perf_counter() - t0
    acc = model.evaluate(Xte, yte)["accuracy"]
    n_seen = args.epochs * int(len(ytr) * 0.9)
    print(f"\nfastprop: test accuracy {acc:.4f}, training took {t_fp:.2f} s "
          f"({n_seen / t_fp:,.0f} samples/s)")

    if args.plot:
        _plot(history, args.plot)

    if args.no_reference:
        return 0
    n_train = len(ytr) - int(np.floor(len(ytr) * 0.1))
    print("timing the same training with the pure-NumPy reference (fastprop.reference) ...")
    t0 = time.perf_counter()
    _reference_fit(ref, Xtr[:n_train], ytr[:n_train], args.epochs, args.batch_size, args.seed)
    t_ref = time.perf_counter() - t0
    ref_acc = float(np.mean(np.argmax(ref.predict(Xte.astype(ref.dtype)), axis=1) == yte))
    print(f"reference: test accuracy {ref_acc:.4f}, training took {t_ref:.2f} s")
    print(f"speed: fastprop trained {t_ref / t_fp:.1f}x faster than pure NumPy "
          f"({args.epochs} epochs, batch {args.batch_size}, same network and data)")
    return 0


def _plot(history, path):
    import fastprop as fp
    try:
        fp.plot_history(history, path)
    except ImportError as exc:
        print(f"{exc}; no plot written", file=sys.stderr)
        return
    print(f"learning curves saved to {path}")


def explain(args):
    """Train the demo network briefly, trace one real minibatch, print the trace summary and
    write its pictures (PNG and SVG) to args.out."""
    import os
    import fastprop as fp

    os.makedirs(args.out, exist_ok=True)
    Xtr, ytr, _, _ = _digits_split(args.seed)
    model = _demo_model(args.seed, "float32")
    print(f"training the demo network on the bundled digits for {args.epochs} epochs ...")
    history = model.fit(Xtr, ytr, epochs=args.epochs, batch_size=args.batch_size,
                        validation_split=0.1, verbose=0)
    batch = slice(0, args.batch_size)            # one real minibatch of the training data
    tr = fp.trace(model, Xtr[batch], ytr[batch])
    tr.summary()
    pictures = [("blocks", tr.plot_blocks), ("graph", tr.plot_graph),
                ("history", lambda p: fp.plot_history(history, p)),
                ("scalar_graph", fp.plot_graph)]
    for name, draw in pictures:
        for ext in ("png", "svg"):
            draw(os.path.join(args.out, f"{name}.{ext}"))
    print(f"pictures written to {args.out}: "
          + ", ".join(f"{name}.png/.svg" for name, _ in pictures))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastprop",
                                     description="fastprop command line")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="train on the bundled digits and compare with pure NumPy")
    d.add_argument("--epochs", type=int, default=40)
    d.add_argument("--batch-size", type=int, default=32)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    d.add_argument("--plot", metavar="FILE.png", help="save learning curves (needs matplotlib)")
    d.add_argument("--no-reference", action="store_true",
                   help="skip the timing of the pure-NumPy reference")
    e = sub.add_parser("explain", help="trace one minibatch of the demo network: summary and "
                                       "pictures of forward and backward propagation")
    e.add_argument("--out", metavar="DIR", default="fastprop-explain",
                   help="directory for the pictures (created if missing)")
    e.add_argument("--epochs", type=int, default=5)
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--seed", type=int, default=0)
    from fastprop import _bench
    _bench.add_arguments(sub.add_parser(
        "bench", help="speed tables against pure NumPy, PyTorch, scikit-learn, GEMM floor"))
    args = parser.parse_args(argv)
    if args.command == "bench":
        return _bench.main(args)
    if args.command == "demo":
        if args.epochs < 1 or args.batch_size < 1:
            parser.error("--epochs and --batch-size must be >= 1")
        return demo(args)
    if args.command == "explain":
        if args.epochs < 0 or args.batch_size < 1:
            parser.error("--epochs must be >= 0 and --batch-size >= 1")
        return explain(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
