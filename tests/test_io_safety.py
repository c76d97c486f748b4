"""fastprop.io against hostile files and destinations (issue 9, items 5, 7 and 9).

Sizes are checked before anything is allocated or any layer built; only regular files are
read (never blocking on a FIFO); saves follow symlinks, refuse special files and leave
recognizable temp files that the next save removes.
"""
import io
import json
import os
import re
import stat
import subprocess
import sys
import threading
import tracemalloc
import zipfile

import numpy as np
import pytest

import fastprop as fp
import fastprop.io as fio
from fastprop.model import Sequential
from fuzz_corpus.make_load_corpus import archive, members, with_header

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX files")
TEMP_NAME = re.compile(r"\.(?P<name>.+)\.fastprop-tmp-(?P<pid>[0-9]+)-[0-9a-f]{16}\Z")


def make_model(steps=2):
    model = Sequential([fp.Dense(4, 6, activation="relu", seed=1),
                        fp.Dense(6, 3, activation="softmax", seed=2)],
                       optimizer=fp.optim.Adam(lr=1e-2), dtype="float64", seed=0)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((16, 4)), rng.integers(0, 3, 16)
    for _ in range(steps):
        model.train_step(X, y)
    return model


@pytest.fixture
def no_build(monkeypatch):
    """Make building a model from a config an error: checks must refuse the file first."""
    def refuse(cls, config):
        raise AssertionError("a model was built before the sizes were checked")
    monkeypatch.setattr(Sequential, "from_config", classmethod(refuse))


# -- item 5: sizes before allocation ----------------------------------------------------------
@pytest.mark.parametrize("layer, value", [(0, {"n_in": 12000, "n_out": 12000}),
                                          (1, {"n_in": 6, "n_out": 10**9}),
                                          (0, {"n_out": 5000})])
def test_huge_architecture_refused_before_any_layer_is_built(no_build, layer, value):
    data = with_header(make_model().to_bytes(),
                       lambda h: h["config"]["layers"][layer].update(value))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="n_params"):
            fp.from_bytes(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20  # 12000 x 12000 float64 weights would be 1.1 GB


def test_many_small_layers_beyond_the_parameter_count(no_build):
    def edit(h):
        h["config"]["layers"] = [{"type": "Dense", "n_in": 6, "n_out": 6, "activation": "relu",
                                  "init": "he_uniform"}] * 40
    with pytest.raises(ValueError, match="n_params"):
        fp.from_bytes(with_header(make_model().to_bytes(), edit))


def test_unknown_layer_widths_bounded_by_the_parameter_count(no_build):
    def edit(h):
        h["config"]["layers"].append({"type": "LayerNorm", "n_features": 10**9})
    with pytest.raises(ValueError, match="n_features"):
        fp.from_bytes(with_header(make_model().to_bytes(), edit))


def test_memory_needed_to_load_is_checked_before_building(no_build, monkeypatch):
    data = make_model().to_bytes()
    monkeypatch.setattr(fio.V, "_available_memory", lambda: 1500)  # the arrays fit, twice not
    with pytest.raises(ValueError, match="memory available"):
        fp.from_bytes(data)


@pytest.mark.parametrize("depth", [33, 1000, 100_000])
def test_deeply_nested_header_is_a_value_error(depth):
    text = '{"format": "fastprop-model", "x": ' + "[" * depth + "]" * depth + "}"
    data = with_header(make_model().to_bytes(), text=text)
    with pytest.raises(ValueError, match="nests"):
        fp.from_bytes(data)


def test_brackets_inside_strings_do_not_count_as_nesting():
    model = make_model()
    data = with_header(model.to_bytes(),
                       lambda h: h.update(fastprop_version='[[[{{{"' * 7))
    np.testing.assert_array_equal(fp.from_bytes(data).params, model.params)


def _patch_central_directory(data, member, field_offset, value):
    """``data`` with a 4-byte field of ``member``'s central-directory entry set to ``value``."""
    patched = bytearray(data)
    pos = patched.find(b"PK\x01\x02")
    while pos >= 0:
        name_len = int.from_bytes(patched[pos + 28:pos + 30], "little")
        if bytes(patched[pos + 46:pos + 46 + name_len]) == member.encode():
            patched[pos + field_offset:pos + field_offset + 4] = value.to_bytes(4, "little")
            return bytes(patched)
        pos = patched.find(b"PK\x01\x02", pos + 4)
    raise AssertionError(f"no {member} in the central directory")


@pytest.mark.parametrize("extra, words", [(10**6, "past the end"), (1, "stored")])
def test_declared_compressed_size_must_fit_the_file(extra, words):
    data = make_model().to_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        size = zf.getinfo("params.npy").compress_size
    bad = _patch_central_directory(data, "params.npy", 20, size + extra)  # compressed size
    with pytest.raises(ValueError, match=words):
        fp.from_bytes(bad)


def test_deflated_member_claiming_more_than_deflate_can_expand():
    model = make_model()
    data = archive(members(model.to_bytes()), zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.getinfo("params.npy")
    bad = _patch_central_directory(data, "params.npy", 24,
                                   2000 * info.compress_size + 2048)  # uncompressed size
    with pytest.raises(ValueError, match="deflate"):
        fp.from_bytes(bad)
    np.testing.assert_array_equal(fp.from_bytes(data).params, model.params)


@pytest.mark.parametrize("member", ["header.npy", "params.npy"])
@pytest.mark.parametrize("broken", [b"(", b"((", b"'''", b"\\"])
def test_npy_header_that_numpy_cannot_tokenize(member, broken):
    """numpy parses a .npy header with ast / tokenize, before the member's CRC is checked:
    whatever they raise on damage must come out as ValueError."""
    parts = members(make_model().to_bytes())
    raw = parts[member]
    at = raw.index(b"), }") + 2
    parts[member] = raw[:at] + broken + raw[at + len(broken):]  # same length, valid CRC
    with pytest.raises(ValueError, match="not a valid .npy"):
        fp.from_bytes(archive(parts))


@pytest.mark.parametrize("t, ok", [(2**63 - 1, False), (2**53 + 1, False), (2**53, True)])
def test_step_count_bounded_so_training_cannot_overflow(t, ok):
    model = make_model()
    data = with_header(model.to_bytes(), lambda h: h.update(t=t))
    if not ok:
        with pytest.raises(ValueError, match="t "):
            fp.from_bytes(data)
        return
    loaded = fp.from_bytes(data)
    assert loaded.optimizer.t == t
    rng = np.random.default_rng(1)
    loaded.train_step(rng.standard_normal((8, 4)), rng.integers(0, 3, 8))  # no OverflowError
    assert loaded.optimizer.t == t + 1 and np.isfinite(loaded.params).all()


# -- only regular files are read --------------------------------------------------------------
@posix_only
def test_load_fifo_refused_without_blocking(tmp_path):
    fifo = tmp_path / "model.fpz"
    os.mkfifo(fifo)
    outcome = []

    def target():
        try:
            fp.load(fifo)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion below
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(30)
    if thread.is_alive():  # blocked in open(): release it by opening the other end
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(10)
        pytest.fail("fp.load blocked on a FIFO")
    assert len(outcome) == 1 and isinstance(outcome[0], ValueError), outcome
    assert "FIFO" in str(outcome[0]) and str(fifo) in str(outcome[0])


@posix_only
def test_load_character_device_refused(tmp_path):
    if not os.path.exists("/dev/null") or not stat.S_ISCHR(os.stat("/dev/null").st_mode):
        pytest.skip("no /dev/null character device")
    with pytest.raises(ValueError, match="character device"):
        fp.load("/dev/null")
    link = tmp_path / "link.fpz"
    link.symlink_to("/dev/null")
    with pytest.raises(ValueError, match="character device"):
        fp.load(link)


@posix_only
def test_load_opens_nonblocking_and_checks_what_it_opened(tmp_path, monkeypatch):
    """The path may change between the stat and the open: the opened file is checked too."""
    path = tmp_path / "m.fpz"
    make_model().save(path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    real_open, flags_seen = os.open, []

    def swapped_open(p, flags, *args):
        flags_seen.append(flags)
        return real_open(fifo, flags, *args)  # as if path had been replaced by a FIFO
    monkeypatch.setattr(os, "open", swapped_open)
    with pytest.raises(ValueError, match="FIFO"):
        fp.load(path)
    assert flags_seen and all(f & os.O_NONBLOCK for f in flags_seen)


def test_empty_paths_are_value_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = make_model()
    with pytest.raises(ValueError, match="path"):
        fp.load("")
    with pytest.raises(ValueError, match="path"):
        model.save("")
    missing = os.path.join("no", "such", "m.fpz")
    with pytest.raises(FileNotFoundError, match=r"save model to 'no/such/m.fpz'.*directory"):
        model.save(missing)
    assert os.listdir(tmp_path) == []


# -- item 7: where saves go -------------------------------------------------------------------
@posix_only
def test_save_through_symlink_updates_the_target(tmp_path):
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    target = real_dir / "model.fpz"
    first, second = make_model(1), make_model(4)
    first.save(target)
    link = tmp_path / "link.fpz"
    link.symlink_to(os.path.relpath(target, tmp_path))
    second.save(link)
    assert link.is_symlink() and os.readlink(link) == os.path.relpath(target, tmp_path)
    np.testing.assert_array_equal(fp.load(target).params, second.params)
    assert sorted(os.listdir(tmp_path)) == ["link.fpz", "real"]
    assert os.listdir(real_dir) == ["model.fpz"]


@posix_only
def test_save_through_symlink_chain_and_dangling_link(tmp_path):
    target = tmp_path / "sub" / "final.fpz"
    target.parent.mkdir()
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(target)  # dangling until the save creates the target
    model = make_model()
    model.save(tmp_path / "a")
    assert (tmp_path / "a").is_symlink() and (tmp_path / "b").is_symlink()
    np.testing.assert_array_equal(fp.load(target).params, model.params)


@posix_only
def test_save_keeps_the_targets_mode_through_a_symlink(tmp_path):
    target = tmp_path / "t.fpz"
    make_model().save(target)
    os.chmod(target, 0o604)
    (tmp_path / "l.fpz").symlink_to(target)
    make_model(3).save(tmp_path / "l.fpz")
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o604


@posix_only
def test_save_refuses_special_files_and_directories(tmp_path):
    model = make_model()
    fifo = tmp_path / "fifo.fpz"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="FIFO"):
        model.save(fifo)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    (tmp_path / "dir").mkdir()
    (tmp_path / "to_dir").symlink_to(tmp_path / "dir")
    with pytest.raises(ValueError, match="directory"):
        model.save(tmp_path / "to_dir")
    if stat.S_ISCHR(os.stat("/dev/null").st_mode):
        (tmp_path / "null.fpz").symlink_to("/dev/null")
        with pytest.raises(ValueError, match="character device"):
            model.save(tmp_path / "null.fpz")
        assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(ValueError, match="path|loop"):
        model.save(tmp_path / "loop")
    assert not any(TEMP_NAME.match(n) for n in os.listdir(tmp_path))


def test_temp_file_name_is_recognizable_and_beside_the_target(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append((os.fspath(src), os.fspath(dst)))
        return real_replace(src, dst)
    monkeypatch.setattr(os, "replace", spy)
    make_model().save(tmp_path / "model.fpz")
    (src, dst), = seen
    assert os.path.dirname(src) == os.path.dirname(dst) == str(tmp_path)
    m = TEMP_NAME.match(os.path.basename(src))
    assert m and m["name"] == "model.fpz" and int(m["pid"]) == os.getpid()


def test_temp_file_removed_on_any_exception(tmp_path, monkeypatch):
    path = tmp_path / "m.fpz"
    make_model().save(path)
    before = path.read_bytes()
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        make_model(5).save(path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["m.fpz"] and path.read_bytes() == before


def test_long_names_still_get_a_temp_file(tmp_path):
    name = "m" * 250  # NAME_MAX is 255 on most file systems
    make_model().save(tmp_path / name)
    assert os.listdir(tmp_path) == [name]


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@posix_only
def test_next_save_removes_leftovers_of_dead_processes_only(tmp_path):
    dead, alive = _dead_pid(), os.getppid()
    names = {
        "dead": f".m.fpz.fastprop-tmp-{dead}-{'0' * 16}",
        "alive": f".m.fpz.fastprop-tmp-{alive}-{'1' * 16}",
        "mine": f".m.fpz.fastprop-tmp-{os.getpid()}-{'2' * 16}",  # a concurrent save here
        "other_file": f".n.fpz.fastprop-tmp-{dead}-{'3' * 16}",
        "not_ours": f".m.fpz.fastprop-tmp-{dead}-notours",
    }
    for n in names.values():
        (tmp_path / n).write_bytes(b"PK half a model")
    make_model().save(tmp_path / "m.fpz")
    left = set(os.listdir(tmp_path))
    assert names["dead"] not in left
    assert {names[k] for k in ("alive", "mine", "other_file", "not_ours")} <= left
    fp.load(tmp_path / "m.fpz")


def test_nesting_counted_after_an_escaped_backslash():
    """``"\\\\"`` ends its string: the brackets after it count (a parser that took the quote
    as escaped would skip them)."""
    text = '{"format": "fastprop-model", "a": "x\\\\", "b": ' + "[" * 40 + "]" * 40 + "}"
    assert json.loads(text)["a"] == "x\\"
    with pytest.raises(ValueError, match="nests 41"):
        fp.from_bytes(with_header(make_model().to_bytes(), text=text))


def test_unterminated_string_of_escaped_quotes_is_rejected():
    """The depth pre-check runs before any parse, so it must stay linear on invalid JSON such
    as this (a backtracking string regex is quadratic here: hours for an 8 MB header)."""
    text = '{"format": "' + '\\"' * 300_000
    with pytest.raises(ValueError, match="not valid JSON"):
        fp.from_bytes(with_header(make_model().to_bytes(), text=text))
