"""Data-parallel scaling: samples/s of the medium net on 1 process and on 2 MPI ranks.

    python benchmarks/bench_scale.py [--rounds 3] [--repeats 5] [--no-torch] [--bind-to none,core]

The medium net (784-256-256-10, ReLU, softmax cross-entropy, plain SGD, float32) trained at
global batch 128 and 512: fastprop ``train_step`` in one process, fastprop
``train_step(comm=...)`` on 2 ranks under ``mpiexec`` (each rank half the global batch), and as
the anchor PyTorch in one process and PyTorch DDP (gloo backend over 127.0.0.1) on 2 ranks.
Every process uses one BLAS / intra-op thread. Throughput is measured on whole epochs
(``fit`` for fastprop, a plain batch loop for torch), so that it includes waiting for the
slower rank. The four launches are interleaved round by round. For fastprop on 2 ranks it also
times one step's ``Allreduce`` of the gradient buffer alone (ranks aligned by a barrier first)
and the update-only call (``apply_gradients``), as a share of a 1-process step.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

SIZES = [784, 256, 256, 10]
BATCHES = [128, 512]
HERE = os.path.abspath(__file__)


def _data(n, seed):
    import numpy as np
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, SIZES[0])).astype(np.float32), rng.integers(0, 10, n)


def _fastprop_model():
    import fastprop as fp
    layers = [fp.Dense(a, b, activation="relu" if i < len(SIZES) - 2 else "softmax", seed=i)
              for i, (a, b) in enumerate(zip(SIZES, SIZES[1:]))]
    return fp.Sequential(layers, optimizer=fp.optim.SGD(lr=0.01), seed=0)


def _median_step(step, steps, warmup=5):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


N_SAMPLES = 4096     # the global training set of one epoch
BINDS = ["none", "core"]   # mpiexec --bind-to of the 2-rank launches, each its own row
BTL = "self,sm"      # Open MPI's transports: shared memory, or self,tcp (loopback)


def _epochs(run_epoch, repeats, warmup=1):
    for _ in range(warmup):
        run_epoch()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_epoch()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def worker_fastprop(repeats):
    """One process, or one rank of an mpiexec launch (comm when size > 1): median time of a
    fit epoch over N_SAMPLES samples at each global batch."""
    import numpy as np
    comm = None
    rank, size = 0, 1
    if os.environ.get("OMPI_COMM_WORLD_SIZE") or os.environ.get("PMI_SIZE"):
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
        rank, size = comm.Get_rank(), comm.Get_size()
    X, y = _data(N_SAMPLES, 1)
    part = slice(rank * N_SAMPLES // size, (rank + 1) * N_SAMPLES // size)
    Xs, ys = np.ascontiguousarray(X[part]), y[part]
    out = {}
    for gb in BATCHES:
        model = _fastprop_model()
        if comm is not None:
            comm.Barrier()
        t = _epochs(lambda: model.fit(Xs, ys, epochs=1, batch_size=gb // size, verbose=0,
                                      comm=comm), repeats)
        out[gb] = {"epoch": t}
        if comm is None:
            continue
        out[gb]["epoch"] = comm.allreduce(t, op=MPI.MAX)
        # the allreduce of one step alone (ranks in step: a barrier before each, not timed)
        buf = np.zeros(model.n_params + 3, dtype=np.float32)
        times = []
        for _ in range(20 + 3):
            comm.Barrier()
            t0 = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            times.append(time.perf_counter() - t0)
        out[gb]["allreduce"] = comm.allreduce(statistics.median(times[3:]), op=MPI.MAX)
        model.grads[...] = 0
        out[gb]["update"] = _median_step(model.apply_gradients, 20)
        Xb, yb = Xs[:gb // size], ys[:gb // size]
        out[gb]["gradients"] = _median_step(lambda: model.compute_gradients(Xb, yb), 20)
    if rank == 0:
        print("RESULT " + json.dumps(out), flush=True)


def worker_torch(repeats):
    """PyTorch, one process or one DDP rank (RANK / WORLD_SIZE / MASTER_PORT from the env):
    median time of an epoch over this rank's share of N_SAMPLES, in batches."""
    import torch
    import torch.nn as nn
    torch.set_num_threads(1)
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if size > 1:
        import torch.distributed as dist
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{os.environ['MASTER_PORT']}",
                                rank=rank, world_size=size)
    X, y = _data(N_SAMPLES, 1)
    part = slice(rank * N_SAMPLES // size, (rank + 1) * N_SAMPLES // size)
    Xs, ys = torch.from_numpy(X[part].copy()), torch.from_numpy(y[part])
    out = {}
    for gb in BATCHES:
        torch.manual_seed(0)
        layers = []
        for i, (a, b) in enumerate(zip(SIZES, SIZES[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(SIZES) - 2:
                layers.append(nn.ReLU())
        net = nn.Sequential(*layers)
        if size > 1:
            net = nn.parallel.DistributedDataParallel(net)
        opt = torch.optim.SGD(net.parameters(), lr=0.01)
        lossf = nn.CrossEntropyLoss()
        b = gb // size

        def epoch():
            for start in range(0, len(ys), b):
                opt.zero_grad()
                loss = lossf(net(Xs[start:start + b]), ys[start:start + b])
                loss.backward()
                opt.step()
        t = _epochs(epoch, repeats)
        if size > 1:
            tt = torch.tensor([t])
            dist.all_reduce(tt, op=dist.ReduceOp.MAX)
            t = float(tt[0])
        out[gb] = {"epoch": t}
    if rank == 0:
        print("RESULT " + json.dumps(out), flush=True)
    if size > 1:
        dist.destroy_process_group()


def _mpiexec():
    for d in (os.path.dirname(sys.executable), os.path.join(sys.base_prefix, "bin")):
        found = shutil.which("mpiexec", path=d)
        if found:
            return found
    return shutil.which("mpiexec")


def _result(proc):
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return {int(k): v for k, v in json.loads(line[7:]).items()}
    raise RuntimeError(f"worker failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def _env():
    return dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                OMPI_MCA_btl=BTL)


def run(kind, repeats):
    env = _env()
    if kind == "fp1":
        cmd = [sys.executable, HERE, "--worker", "fastprop", "--repeats", str(repeats)]
        return _result(subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600))
    if kind.startswith("fp2:"):
        cmd = ["timeout", "600", _mpiexec(), "-n", "2", "--bind-to", kind[4:], sys.executable, HERE,
               "--worker", "fastprop", "--repeats", str(repeats)]
        return _result(subprocess.run(cmd, env=env, capture_output=True, text=True))
    if kind == "torch1":
        cmd = [sys.executable, HERE, "--worker", "torch", "--repeats", str(repeats)]
        return _result(subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600))
    # torch DDP: two processes on loopback
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, HERE, "--worker", "torch", "--repeats", str(repeats)],
                              env=dict(env, RANK=str(r), WORLD_SIZE="2", MASTER_PORT=str(port)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    return _result(subprocess.CompletedProcess([], procs[0].returncode, outs[0][0], outs[0][1]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5, help="timed epochs per launch")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--bind-to", default="none,core",
                   help="mpiexec --bind-to of the fastprop 2-rank launches, comma-separated "
                        "(each one a row): none, core")
    p.add_argument("--btl", default="self,sm", help="Open MPI transports: self,sm or self,tcp")
    p.add_argument("--worker", choices=["fastprop", "torch"])
    args = p.parse_args(argv)
    global BINDS, BTL
    BINDS, BTL = args.bind_to.split(","), args.btl
    if args.worker == "fastprop":
        return worker_fastprop(args.repeats)
    if args.worker == "torch":
        return worker_torch(args.repeats)
    fp2 = [f"fp2:{b}" for b in BINDS]
    kinds = ["fp1"] + fp2 + ([] if args.no_torch else ["torch1", "ddp2"])
    res = {k: [] for k in kinds}
    for r in range(args.rounds):              # interleaved: every kind once per round
        for k in kinds:
            res[k].append(run(k, args.repeats))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    print(f"medium net {'-'.join(map(str, SIZES))}, float32, SGD, 1 thread per process; "
          f"epochs of {N_SAMPLES} samples (fastprop: fit; torch: a batch loop), median of "
          f"{args.repeats} epochs per launch; samples/s median (min-max) over {args.rounds} "
          f"interleaved launches")
    print(f"{'global batch':>12}  {'implementation':<22} {'samples/s':>26}  {'vs 1 process':>12}")

    def sps(kind, gb):
        return [N_SAMPLES / x[gb]["epoch"] for x in res[kind]]

    for gb in BATCHES:
        for kind, name, base in ([("fp1", "fastprop 1 process", "fp1")] +
                                 [(k, f"fastprop 2 ranks, {k[4:]}", "fp1") for k in fp2] +
                                 [("torch1", "torch 1 process", "torch1"),
                                  ("ddp2", "torch DDP 2 ranks", "torch1")]):
            if kind not in res:
                continue
            v = sps(kind, gb)
            ratio = statistics.median(v) / statistics.median(sps(base, gb))
            print(f"{gb:>12}  {name:<22} {statistics.median(v):>12,.0f} "
                  f"({min(v):,.0f}-{max(v):,.0f})  {ratio:>11.2f}x")
        # a medium step of the global batch in one process, from the 1-process epochs
        step = [x[gb]["epoch"] * gb / N_SAMPLES for x in res["fp1"]]
        t_ar = statistics.median(x[gb]["allreduce"] for x in res[fp2[0]])
        t_up = statistics.median(x[gb]["update"] for x in res[fp2[0]])
        t_gr = statistics.median(x[gb]["gradients"] for x in res[fp2[0]])
        print(f"{'':>12}  per 2-rank step ({fp2[0][4:]}): gradients-only {t_gr * 1e6:,.0f} us, allreduce alone "
              f"{t_ar * 1e6:,.0f} us, update-only call {t_up * 1e6:,.0f} us; allreduce + "
              f"update = {(t_ar + t_up) / statistics.median(step):.1%} of a 1-process step of "
              f"the global batch ({statistics.median(step) * 1e6:,.0f} us)")
        for k in fp2 if "ddp2" in res else ():
            print(f"{'':>12}  fastprop 2 ranks ({k[4:]}) / torch DDP 2 ranks: "
                  f"{statistics.median(sps(k, gb)) / statistics.median(sps('ddp2', gb)):.2f}x")


if __name__ == "__main__":
    main()
