"""The benchmark machinery (fastprop._bench): checks, tables and JSON on the tiny net only.

Never asserts speed: only that the numbers exist, are positive and are laid out as documented.
"""
import json
import math

import numpy as np
import pytest

from fastprop import _bench as B

OPTIONAL = tuple(name for name, mod in (("torch", "torch"), ("sklearn", "sklearn"))
                 if B._available(mod))
IMPLS = ("fastprop", "reference") + OPTIONAL
FAST = {"budget": 0.02, "min_repeats": 2, "max_repeats": 3, "sample_s": 2e-4, "seed": 0}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_check_train_tiny_all_agree(dtype):
    checks = B.check_train("tiny", dtype, IMPLS)
    state = checks.pop("_state")
    assert set(checks) == set(IMPLS) == set(state["impls"])
    tol = B.TOL[dtype]
    for name, chk in checks.items():
        assert chk["ok"], (name, chk)
        assert chk["loss_err"] <= tol and chk["param_err"] <= tol
        assert math.isfinite(chk["update_err"])
        assert chk["oracle_loss"] > 0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_check_infer_tiny_all_agree(dtype):
    checks = B.check_infer("tiny", 3, dtype, IMPLS)
    checks.pop("_state")
    for name, chk in checks.items():
        assert chk["ok"], (name, chk)


def test_compare_step_catches_wrong_results():
    batch, sizes = B.NETS["tiny"]
    X, y = B.make_batch(sizes, batch, "float64")
    p0 = B.build_model(sizes, "float64").params.copy()
    oracle = B.oracle_step(sizes, X, y, p0)
    assert B.compare_step(oracle[0], oracle[1], oracle, p0, "float64")["ok"]
    assert not B.compare_step(oracle[0] * 1.01, oracle[1], oracle, p0, "float64")["ok"]
    bad = oracle[1].copy()
    bad[0] += 1e-3
    assert not B.compare_step(oracle[0], bad, oracle, p0, "float64")["ok"]
    assert not B.compare_step(float("nan"), oracle[1], oracle, p0, "float64")["ok"]
    # no update at all (params stay p0) is an error of the update
    assert B.compare_step(oracle[0], p0, oracle, p0, "float64")["update_err"] > 0.5


def test_failed_check_is_reported_not_timed(monkeypatch):
    def broken(sizes, dtype, params0, X, y):
        loss, params, step, obj = B._ref_train(sizes, dtype, params0, X, y)
        return loss * 2, params, step, obj

    monkeypatch.setitem(B.TRAIN_FACTORIES, "reference", broken)
    r = B.run_train_config("tiny", "float32", 1, FAST, ("fastprop", "reference"))
    assert not r["checks"]["reference"]["ok"]
    assert "reference" not in r["timings"] and "fastprop" in r["timings"]
    assert any("reference" in n and "CHECK FAILED" in n for n in r["notes"])
    text = B.format_table([r], "train")
    assert "skipped" in text and "CHECK FAILED" in text


def test_train_config_and_table():
    r = B.run_train_config("tiny", "float64", 1, FAST, ("fastprop", "reference"))
    assert set(r["timings"]) == {"fastprop", "reference", "floor"}
    for t in r["timings"].values():
        assert 0 < t["min_us"] <= t["median_us"]
        assert t["repeats"] == len(t["samples_us"]) >= 2 and t["inner"] >= 1
    assert set(r["ratios"]) == {"ref/fp", "fp/floor"}
    text = B.format_table([r], "train")
    lines = text.splitlines()
    assert lines[0].startswith("Training step")
    for col in ("net", "dtype", "thr", "fastprop µs", "reference µs", "GEMM floor µs",
                "ref/fp", "fp/floor"):
        assert col in lines[1]
    assert "torch µs" not in lines[1]          # empty columns are left out
    assert lines[3].split()[:3] == ["tiny", "float64", "1"]


def test_infer_config_table():
    r = B.run_infer_config("tiny", 2, "float32", 1, FAST, ("fastprop", "reference"))
    assert set(r["timings"]) == {"fastprop", "reference", "floor"}
    text = B.format_table([r], "infer")
    assert text.splitlines()[1].split()[:4] == ["net", "batch", "dtype", "thr"]


def test_fit_comparison_small():
    impls = ("fastprop", "reference") + (("sklearn",) if "sklearn" in OPTIONAL else ())
    r = B.run_fit("float32", epochs=1, repeats=1, impls=impls)
    assert set(r["impls"]) == set(impls)
    for v in r["impls"].values():
        assert v["samples_per_s"] > 0 and 0 <= v["test_accuracy"] <= 1
    assert "samples/s" in B.format_fit([r])


def test_main_json_structure(tmp_path, capsys):
    from fastprop.__main__ import main
    out = tmp_path / "bench.json"
    rc = main(["bench", "--quick", "--nets", "tiny", "--dtypes", "float32", "--threads", "1",
               "--sections", "train,fit", "--epochs", "1", "--budget", "0.05",
               "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "fastprop" in text and "BLAS" in text and "Training step" in text
    data = json.loads(out.read_text())
    assert set(data) >= {"environment", "options", "elapsed_s", "results"}
    env = data["environment"]
    assert env["cpu_count"] >= 1 and env["numpy"] == np.__version__
    train = [r for r in data["results"] if r["section"] == "train"]
    assert len(train) == 1
    r = train[0]
    assert (r["net"], r["dtype"], r["threads"], r["batch"]) == ("tiny", "float32", 1, 1)
    assert set(r["checks"]) == set(IMPLS)
    assert set(r["timings"]) == set(IMPLS) | {"floor"}
    for t in r["timings"].values():
        assert {"min_us", "median_us", "inner", "repeats", "samples_us"} <= set(t)
    assert [x["section"] for x in data["results"]].count("fit") == 1


def test_without_threadpoolctl_runs_with_default_threads(monkeypatch, capsys):
    monkeypatch.setitem(B._OPTIONAL, "threadpoolctl", (None, "ImportError: test"))
    rc = B.main(["--nets", "tiny", "--dtypes", "float64", "--sections", "train", "--no-torch",
                 "--no-sklearn", "--budget", "0.02", "--threads", "1"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "cannot be applied" in captured.out + captured.err
    assert any(line.split()[:3] == ["tiny", "float64", "def"]
               for line in captured.out.splitlines())


def test_two_threads_time_fastprop_and_torch_in_their_own_processes(tmp_path, capsys):
    # at more than one thread fastprop (with its floor) and torch run in worker processes;
    # their checks and timings come back into the same table rows, marked as separate
    pytest.importorskip("threadpoolctl")
    out = tmp_path / "bench.json"
    rc = B.main(["--quick", "--nets", "tiny", "--dtypes", "float64", "--threads", "2",
                 "--sections", "train,infer", "--no-sklearn", "--budget", "0.05",
                 "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "in a process of its own" in text
    data = json.loads(out.read_text())
    rows = [r for r in data["results"] if r["section"] in ("train", "infer")]
    assert rows
    for r in rows:
        assert r["threads"] == 2 and r["checks"]["fastprop"]["ok"]
        for name in ("fastprop", "floor"):
            t = r["timings"][name]
            assert t["process"] == "separate" and t["min_us"] > 0
        assert "process" not in r["timings"]["reference"]
        if "torch" in OPTIONAL:
            assert r["timings"]["torch"]["process"] == "separate"
        assert r["ratios"]["fp/floor"]["min_us"] > 0
