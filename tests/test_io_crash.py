"""Crash consistency of ``model.save`` (issue 9): a child process saving in a loop is
SIGKILLed at random moments, at least 50 times. After every kill the file loads as one of the
two complete models the child alternates between (never a mix, never damaged), and every temp
file a killed save left behind is removed by the next save.

The child is forked from the test process (no interpreter start-up per kill), so this runs in
a few seconds; ``FASTPROP_CRASH_KILLS`` raises the count.
"""
import os
import re
import signal
import time

import numpy as np
import pytest

import fastprop as fp
from fastprop.model import Sequential

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or os.name != "posix",
                                reason="needs fork and SIGKILL")

KILLS = max(50, int(os.environ.get("FASTPROP_CRASH_KILLS", "50")))
TEMP_NAME = re.compile(r"\.model\.fpz\.fastprop-tmp-([0-9]+)-[0-9a-f]{16}\Z")


def make_model(seed):
    # ~100k parameters: a save takes long enough for kills to land inside it
    model = Sequential([fp.Dense(64, 512, activation="relu", seed=seed),
                        fp.Dense(512, 128, activation="relu", seed=seed + 1),
                        fp.Dense(128, 10, activation="softmax", seed=seed + 2)],
                       optimizer=fp.optim.Adam(lr=1e-3), dtype="float32", seed=seed)
    rng = np.random.default_rng(seed)
    model.train_step(rng.standard_normal((32, 64)), rng.integers(0, 10, 32))
    return model


def _child(models, path, ready_w):
    """Save the models alternately forever; never returns (killed by the parent)."""
    try:
        models[0].save(path)  # this save also removed the leftovers of earlier children
        os.write(ready_w, b"x")
        i = 1
        while True:
            models[i % 2].save(path)
            i += 1
    finally:
        os._exit(1)


def _temps(directory):
    return sorted(n for n in os.listdir(directory) if TEMP_NAME.match(n))


def test_sigkill_during_saves_never_breaks_the_file(tmp_path):
    models = [make_model(1), make_model(2)]
    path = tmp_path / "model.fpz"
    models[0].save(path)
    t0 = time.perf_counter()
    models[1].save(path)
    save_time = time.perf_counter() - t0

    rng = np.random.default_rng(int(os.environ.get("FASTPROP_CRASH_SEED", "0")) or None)
    seen = set()
    leftovers_seen = 0
    for _ in range(KILLS):
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            os.close(ready_r)
            _child(models, path, ready_w)
        os.close(ready_w)
        assert os.read(ready_r, 1) == b"x"
        os.close(ready_r)
        time.sleep(rng.uniform(0, 3 * save_time))  # a few saves in, at a random moment
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL

        loaded = fp.load(path)  # always a complete model ...
        match = [i for i, m in enumerate(models) if np.array_equal(loaded.params, m.params)]
        assert len(match) == 1, "the file holds neither saved model"  # ... one of the two
        i = match[0]
        assert loaded.optimizer.get_state()[1] == models[i].optimizer.get_state()[1]
        seen.add(i)
        # a leftover can only be the killed child's own: its first save, complete before
        # the kill, removed those of the children before it
        temps = _temps(tmp_path)
        assert len(temps) <= 1 and all(TEMP_NAME.match(n).group(1) == str(pid)
                                       for n in temps), (pid, temps)
        leftovers_seen += bool(temps)

    # the next save removes every temp file the killed saves left behind
    models[0].save(path)
    assert _temps(tmp_path) == []
    assert os.listdir(tmp_path) == ["model.fpz"]
    np.testing.assert_array_equal(fp.load(path).params, models[0].params)
    print(f"{KILLS} kills, final file model(s) {sorted(seen)}, leftovers after "
          f"{leftovers_seen} kills, one save {save_time * 1e3:.1f} ms")
