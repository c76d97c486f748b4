"""fastprop.io: save / load round trips, atomic writes, and every kind of damaged file."""
import copy
import hashlib
import io
import json
import os
import pickle
import stat
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest

import fastprop as fp
import fastprop.io as fio
from fastprop.io import FORMAT, FORMAT_VERSION, from_bytes, load, save, to_bytes
from fastprop.model import Sequential


def _data(n=32):
    rng = np.random.default_rng(42)
    return rng.standard_normal((n, 4)), rng.integers(0, 3, n)


def make_model(dtype=np.float32, steps=3):
    """A small model with dropout, trained a few steps (non-trivial optimizer state, t, rng)."""
    model = Sequential([fp.Dense(4, 8, activation="relu", seed=1), fp.Dropout(0.25),
                        fp.Dense(8, 3, activation="softmax", seed=2)],
                       loss="cross_entropy", optimizer=fp.optim.Adam(lr=1e-2),
                       dtype=np.dtype(dtype).name, seed=0)
    X, y = _data()
    for _ in range(steps):
        model.train_step(X, y)
    return model


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "model.fpz"
    save(make_model(), path)
    return path


# -- helpers that build damaged files ---------------------------------------------------------
def members_of(path):
    with zipfile.ZipFile(path) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist()}


def write_members(path, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, raw in members.items():
            zf.writestr(name, raw)


def npy(arr, allow_pickle=False):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(arr), allow_pickle=allow_pickle)
    return buf.getvalue()


def array_of(raw):
    return np.lib.format.read_array(io.BytesIO(raw))


def header_of(members):
    return json.loads(array_of(members["header.npy"]).tobytes())


def put_header(members, header):
    text = header if isinstance(header, (bytes, str)) else json.dumps(header)
    raw = text.encode() if isinstance(text, str) else text
    members["header.npy"] = npy(np.frombuffer(raw, dtype=np.uint8))


def put_array(members, name, arr, resign=True):
    """Replace member ``name`` with ``arr`` and (by default) make the header agree with it, so
    that only the check under test can catch the change."""
    members[f"{name}.npy"] = npy(arr)
    if resign:
        h = header_of(members)
        h["arrays"][name]["sha256"] = hashlib.sha256(np.ascontiguousarray(arr).tobytes()) \
            .hexdigest()
        put_header(members, h)


def rejected(path, *words):
    """Assert load(path) raises ValueError naming the file and containing ``words``."""
    with pytest.raises(ValueError) as info:
        load(path)
    msg = str(info.value)
    assert str(path) in msg, msg
    for w in words:
        assert w.lower() in msg.lower(), msg
    return msg


def tamper(saved, edit):
    """Rewrite ``saved`` with ``edit(members)`` applied."""
    members = members_of(saved)
    edit(members)
    write_members(saved, members)
    return saved


def tamper_header(saved, edit):
    def go(members):
        h = header_of(members)
        edit(h)
        put_header(members, h)
    return tamper(saved, go)


# -- round trips ----------------------------------------------------------------------------
def _assert_same_state(a, b):
    assert b.params.dtype == a.params.dtype
    np.testing.assert_array_equal(b.params, a.params)
    sa, ta = a.optimizer.get_state()
    sb, tb = b.optimizer.get_state()
    assert ta == tb and ta > 0
    assert sa.keys() == sb.keys() and sa
    for k in sa:
        assert sb[k].dtype == sa[k].dtype
        np.testing.assert_array_equal(sb[k], sa[k])
    np.testing.assert_array_equal(b.get_rng_state(), a.get_rng_state())
    assert b.get_rng_state().dtype == np.uint64
    assert b.get_config() == a.get_config()


def _assert_same_behaviour(a, b):
    X, y = _data()
    np.testing.assert_array_equal(b.predict(X), a.predict(X))
    for _ in range(3):  # dropout draws from the restored RNG; Adam continues from t
        assert a.train_step(X, y) == b.train_step(X, y)
    np.testing.assert_array_equal(b.params, a.params)
    np.testing.assert_array_equal(b.get_rng_state(), a.get_rng_state())


def test_round_trip_file(tmp_path, dtype):
    model = make_model(dtype)
    path = tmp_path / "m.fpz"
    save(model, path)
    loaded = load(path)
    _assert_same_state(model, loaded)
    _assert_same_behaviour(model, loaded)


def test_round_trip_bytes(dtype):
    model = make_model(dtype)
    loaded = from_bytes(to_bytes(model))
    _assert_same_state(model, loaded)
    _assert_same_behaviour(model, loaded)


@pytest.mark.parametrize("optimizer", [
    fp.optim.SGD(lr=0.1),  # no state at all
    fp.optim.SGD(lr=0.1, momentum=0.9, nesterov=True, clip_norm=1.0),
    fp.optim.AdamW(lr=1e-2, amsgrad=True, schedule=fp.optim.StepLR(2, gamma=0.5)),
    fp.optim.RMSprop(lr=1e-2, momentum=0.5, centered=True),
    fp.optim.Adagrad(lr=1e-2, lr_decay=0.01, initial_accumulator_value=0.1),
], ids=lambda o: type(o).__name__)
def test_round_trip_every_optimizer(tmp_path, optimizer):
    model = Sequential([fp.Dense(4, 5, activation="tanh", seed=3), fp.Dropout(0.5),
                        fp.Dense(5, 3, activation="softmax", seed=4)],
                       optimizer=optimizer, dtype="float64", seed=7)
    X, y = _data()
    for _ in range(2):
        model.train_step(X, y)
    model.save(tmp_path / "m.fpz")           # the model's own entry points
    loaded = fp.load(tmp_path / "m.fpz")
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(loaded.params, model.params)
    assert loaded.optimizer.get_state()[1] == model.optimizer.get_state()[1] == 2
    _assert_same_behaviour(model, loaded)


def test_round_trip_untrained(tmp_path):
    model = make_model(steps=0)
    save(model, tmp_path / "m.fpz")
    loaded = load(tmp_path / "m.fpz")
    np.testing.assert_array_equal(loaded.params, model.params)
    _assert_same_behaviour(model, loaded)


def test_str_path_any_name_and_overwrite(tmp_path):
    path = str(tmp_path / "weights.bin")
    first, second = make_model(steps=1), make_model(steps=4)
    save(first, path)
    save(second, path)  # replaces
    assert os.listdir(tmp_path) == ["weights.bin"]
    np.testing.assert_array_equal(load(path).params, second.params)


def test_pickle_and_deepcopy():
    for clone_of in (lambda m: pickle.loads(pickle.dumps(m)), copy.deepcopy):
        model = make_model()
        clone = clone_of(model)
        _assert_same_state(model, clone)
        _assert_same_behaviour(model, clone)


def test_file_layout(saved):
    with zipfile.ZipFile(saved) as zf:
        infos = zf.infolist()
    names = {i.filename for i in infos}
    assert names >= {"header.npy", "params.npy", "rng.npy"}
    assert all(i.compress_type == zipfile.ZIP_STORED for i in infos)
    members = members_of(saved)
    h = header_of(members)
    assert h["format"] == FORMAT and h["format_version"] == FORMAT_VERSION
    assert h["n_params"] == 4 * 8 + 8 + 8 * 3 + 3 and h["t"] == 3
    assert h["config"]["dtype"] == h["dtype"] == "float32"
    assert set(h["arrays"]) == {n[:-4] for n in names if n != "header.npy"}
    for name, spec in h["arrays"].items():
        arr = array_of(members[f"{name}.npy"])
        assert arr.dtype.str == np.dtype(spec["dtype"]).newbyteorder("<").str
        assert list(arr.shape) == spec["shape"]
        assert hashlib.sha256(arr.tobytes()).hexdigest() == spec["sha256"]
    assert {n for n in names if n.startswith("opt_")}  # Adam has state


def test_file_mode_follows_umask_and_existing_file(tmp_path):
    if os.name != "posix":
        pytest.skip("POSIX permissions")
    old = os.umask(0o027)
    try:
        save(make_model(), tmp_path / "a.fpz")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.fpz").st_mode) == 0o640
    os.chmod(tmp_path / "a.fpz", 0o604)
    save(make_model(), tmp_path / "a.fpz")
    assert stat.S_IMODE(os.stat(tmp_path / "a.fpz").st_mode) == 0o604


# -- atomicity ------------------------------------------------------------------------------
def _fail_savez(*args, **kwargs):
    f = args[0]
    f.write(b"PK\x03\x04 half an archive")
    raise OSError("disk full")


def _fail_replace(*args, **kwargs):
    raise OSError("rename failed")


def _interrupt_fsync(fd):
    raise KeyboardInterrupt


@pytest.mark.parametrize("target, replacement, exc", [
    ("numpy.savez", _fail_savez, OSError),
    ("os.replace", _fail_replace, OSError),
    ("os.fsync", _interrupt_fsync, KeyboardInterrupt),
])
def test_failed_save_keeps_old_file_and_leaves_no_temp(saved, monkeypatch, target,
                                                       replacement, exc):
    before = saved.read_bytes()
    monkeypatch.setattr(target, replacement)
    with pytest.raises(exc):
        save(make_model(steps=5), saved)
    monkeypatch.undo()
    assert os.listdir(saved.parent) == [saved.name]
    assert saved.read_bytes() == before
    load(saved)


def test_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr("numpy.savez", _fail_savez)
    with pytest.raises(OSError):
        save(make_model(), tmp_path / "m.fpz")
    assert os.listdir(tmp_path) == []


def test_save_refuses_nan_params(tmp_path):
    model = make_model()
    model.params[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        save(model, tmp_path / "m.fpz")
    assert os.listdir(tmp_path) == []


def test_save_bad_destinations(tmp_path):
    model = make_model()
    with pytest.raises(ValueError, match="directory"):
        save(model, tmp_path)
    with pytest.raises(FileNotFoundError):
        save(model, tmp_path / "no" / "such" / "dir.fpz")
    with pytest.raises(TypeError, match="path"):
        save(model, 123)
    with pytest.raises(TypeError, match="path"):
        save(model, bytes(tmp_path / "m.fpz"))
    with pytest.raises(TypeError):
        save(object(), tmp_path / "m.fpz")
    assert os.listdir(tmp_path) == []


# -- foreign and missing files --------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nope.fpz")


def test_directory(tmp_path):
    rejected(tmp_path, "directory")


@pytest.mark.parametrize("content, words", [
    (b"", ["empty"]),
    (b"hello, this is a text file\n", ["not a zip"]),
    (b"PK\x07\x08 almost a zip", ["not a zip"]),
    (b"PK\x03\x04", ["corrupt"]),
])
def test_foreign_bytes(tmp_path, content, words):
    path = tmp_path / "f.fpz"
    path.write_bytes(content)
    rejected(path, *words)


def test_random_bytes(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "r.fpz"
    for prefix in (b"", b"PK\x03\x04"):
        path.write_bytes(prefix + rng.bytes(4096))
        rejected(path)


def test_npy_file(tmp_path):
    path = tmp_path / "a.fpz"
    path.write_bytes(npy(np.arange(10.0)))
    rejected(path, ".npy")


def test_other_zips(tmp_path):
    path = tmp_path / "z.fpz"
    write_members(path, {"readme.txt": b"hi"})
    rejected(path, "header.npy")
    np.savez(open(path, "wb"), a=np.arange(3), b=np.ones(2))
    rejected(path, "header.npy")
    with zipfile.ZipFile(path, "w"):
        pass  # an empty zip
    rejected(path)


_UNPICKLED = []


def _record(value):
    _UNPICKLED.append(value)
    return value


class _Payload:
    def __reduce__(self):
        return (_record, ("unpickled!",))


@pytest.mark.parametrize("member", ["params.npy", "header.npy", "rng.npy"])
def test_pickled_member_is_never_unpickled(saved, member):
    _UNPICKLED.clear()
    evil = npy(np.array([_Payload(), 1.0], dtype=object), allow_pickle=True)
    tamper(saved, lambda m: m.__setitem__(member, evil))
    rejected(saved, "dtype")
    assert _UNPICKLED == []


def test_pickle_file_is_never_unpickled(tmp_path):
    _UNPICKLED.clear()
    path = tmp_path / "p.fpz"
    path.write_bytes(pickle.dumps(_Payload()))
    rejected(path)
    path.write_bytes(npy(np.array([_Payload()], dtype=object), allow_pickle=True))
    rejected(path)
    assert _UNPICKLED == []


# -- truncation and flipped bytes ------------------------------------------------------------
def test_truncated(saved):
    data = saved.read_bytes()
    n = len(data)
    for cut in sorted({1, 2, 4, 30, 100, 500, n // 3, n // 2, n - 200, n - 100, n - 22, n - 1}):
        saved.write_bytes(data[:cut])
        rejected(saved)


def test_flipped_byte_in_params(saved):
    data = bytearray(saved.read_bytes())
    params = load(saved).params
    at = bytes(data).find(params.tobytes()) + params.nbytes // 2
    assert at > params.nbytes // 2
    data[at] ^= 0x10
    saved.write_bytes(bytes(data))
    rejected(saved, "corrupt")  # the zip CRC fires first


def test_changed_params_fail_checksum(saved):
    def edit(m):
        arr = array_of(m["params.npy"]).copy()
        arr[0] += 1
        put_array(m, "params", arr, resign=False)
    tamper(saved, edit)
    rejected(saved, "params", "checksum")


def test_changed_rng_and_optimizer_fail_checksum(saved):
    for name in ["rng"] + [n[:-4] for n in members_of(saved) if n.startswith("opt_")]:
        good = saved.read_bytes()

        def edit(m):
            arr = array_of(m[f"{name}.npy"]).copy()
            arr[-1] += 1
            put_array(m, name, arr, resign=False)
        tamper(saved, edit)
        rejected(saved, name, "checksum")
        saved.write_bytes(good)


# -- tampered arrays -------------------------------------------------------------------------
def test_nan_in_params(saved):
    def edit(m):
        arr = array_of(m["params.npy"]).copy()
        arr[5] = np.nan
        put_array(m, "params", arr)
    tamper(saved, edit)
    rejected(saved, "params", "nan")


def test_inf_in_optimizer_state(saved):
    name = next(n[:-4] for n in members_of(saved) if n.startswith("opt_"))

    def edit(m):
        arr = array_of(m[f"{name}.npy"]).copy()
        arr[0] = np.inf
        put_array(m, name, arr)
    tamper(saved, edit)
    rejected(saved, name, "nan or infinity")


@pytest.mark.parametrize("name, arr", [
    ("params", lambda a: a.astype(np.float64)),
    ("params", lambda a: a.astype(np.float16)),
    ("params", lambda a: a.astype(">f4")),
    ("params", lambda a: a.view(np.int32)),
    ("rng", lambda a: a.astype(np.int64)),
    ("params", lambda a: a[:-1]),
    ("params", lambda a: np.concatenate([a, a[:1]])),
    ("params", lambda a: a.reshape(1, -1)),
    ("rng", lambda a: a[:-1]),
])
def test_wrong_dtype_or_shape(saved, name, arr):
    tamper(saved, lambda m: put_array(m, name, arr(array_of(m[f"{name}.npy"]))))
    rejected(saved, name)


def test_header_not_npy_uint8(saved):
    tamper(saved, lambda m: m.__setitem__("header.npy", npy(np.zeros(10, dtype=np.float32))))
    rejected(saved, "header.npy", "dtype")
    tamper(saved, lambda m: m.__setitem__("header.npy", b"{\"format\": 1}"))
    rejected(saved, "header.npy", ".npy")


# -- missing and extra members ---------------------------------------------------------------
def test_missing_members(saved):
    good = saved.read_bytes()
    for name in members_of(saved):
        saved.write_bytes(good)
        tamper(saved, lambda m: m.pop(name))
        rejected(saved, "header.npy" if name == "header.npy" else "missing")


@pytest.mark.parametrize("extra", ["evil.npy", "notes.txt", "params", "dir/", "opt_x.npy"])
def test_extra_member(saved, extra):
    tamper(saved, lambda m: m.__setitem__(extra, npy(np.zeros(3))))
    rejected(saved, "unexpected")


def test_duplicate_member(saved):
    members = members_of(saved)
    with pytest.warns(UserWarning):  # zipfile warns about the duplicate name
        with zipfile.ZipFile(saved, "a") as zf:
            zf.writestr("params.npy", members["params.npy"])
    rejected(saved, "duplicate")


# -- tampered header -------------------------------------------------------------------------
def _layer0(key, value):
    def edit(h):
        h["config"]["layers"][0][key] = value
    return edit


def _set(key, value):
    def edit(h):
        h[key] = value
    return edit


def _array_field(name, key, value):
    def edit(h):
        h["arrays"][name][key] = value
    return edit


@pytest.mark.parametrize("edit, words", [
    (_layer0("n_in", 5), ["n_params"]),          # builds, but has other parameter count
    (_layer0("n_in", 7), ["n_params"]),
    (_layer0("activation", "bogus"), ["config", "bogus"]),
    (_layer0("n_out", -3), ["config"]),
    (_layer0("n_out", 0), ["config"]),
    (_layer0("n_in", 10**12), ["config"]),
    (_layer0("n_in", 4.0), ["config"]),
    (_layer0("n_in", "4"), ["config"]),
    (_set("config", []), ["config"]),
    (_set("format", "something-else"), ["not a fastprop model"]),
    (_set("format_version", FORMAT_VERSION + 1), ["newer", "upgrade"]),
    (_set("format_version", 0), ["format_version"]),
    (_set("format_version", "1"), ["format_version"]),
    (_set("format_version", True), ["format_version"]),
    (_set("dtype", "float64"), ["dtype"]),
    (_set("dtype", "int8"), ["dtype"]),
    (_set("n_params", -1), ["n_params"]),
    (_set("n_params", 10**12), []),
    (_set("n_params", 10**30), []),
    (_set("n_params", 68.0), ["n_params"]),
    (_set("t", -1), ["t "]),
    (_set("t", 2.5), ["t "]),
    (_set("t", 2**64), ["t "]),
    (_set("fastprop_version", 3), ["fastprop_version"]),
    (_set("surprise", 1), ["unexpected field"]),
    (lambda h: h.pop("t"), ["lacks"]),
    (lambda h: h.pop("config"), ["lacks"]),
    (_array_field("params", "shape", [-1]), ["shape"]),
    (_array_field("params", "shape", [10**12]), ["params"]),
    (_array_field("params", "shape", [10**30]), []),
    (_array_field("params", "shape", [2**62] * 4), []),
    (_array_field("params", "dtype", "float64"), ["dtype"]),
    (_array_field("params", "sha256", "0" * 63), ["sha256"]),
    (_array_field("params", "sha256", "0" * 64), ["checksum"]),
    (_array_field("rng", "shape", [10**12]), []),
    (_array_field("rng", "dtype", "float32"), ["dtype"]),
    (lambda h: h["arrays"].pop("rng"), ["rng"]),
    (lambda h: h["arrays"].__setitem__("opt_../../x", h["arrays"]["params"]), ["name"]),
    (lambda h: h["arrays"].__setitem__("rng", []), ["rng"]),
])
def test_tampered_header(saved, edit, words):
    tamper_header(saved, edit)
    tracemalloc.start()
    try:
        rejected(saved, *words)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20  # nothing sized by the tampered numbers was allocated


@pytest.mark.parametrize("text, words", [
    (b"\xff\xfe not utf-8", ["utf-8"]),
    (b"{\"format\": ", ["json"]),
    (b"[1, 2, 3]", ["json object"]),
    (b"\"fastprop-model\"", ["json object"]),
    (b"", ["json"]),
    (b"{\"format\": \"fastprop-model\", \"format\": \"fastprop-model\"}", ["duplicate"]),
    (b"{\"format\": NaN}", ["nan"]),
])
def test_header_not_json_object(saved, text, words):
    tamper(saved, lambda m: put_header(m, text))
    rejected(saved, *words)


def test_huge_header_refused_unread(saved):
    tamper(saved, lambda m: put_header(m, b" " * (fio.MAX_HEADER_BYTES + 1)))
    rejected(saved, "header.npy")


# -- zip bombs -------------------------------------------------------------------------------
def test_deflate_bomb_refused_before_decompressing(saved):
    members = members_of(saved)
    with zipfile.ZipFile(saved, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, raw in members.items():
            if name != "params.npy":
                zf.writestr(name, raw)
        with zf.open("params.npy", "w", force_zip64=True) as f:
            f.write(members["params.npy"][:128])  # the real .npy header, then 64 MiB of zeros
            zero = bytes(2**20)
            for _ in range(64):
                f.write(zero)
    assert saved.stat().st_size < 2**20
    tracemalloc.start()
    try:
        rejected(saved, "params.npy", "declares")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20


def test_declared_size_patched(saved):
    """A central directory that lies about a member's uncompressed size (4 GiB)."""
    members = members_of(saved)
    write_members(saved, members)  # plain zip (no zip64 extras): sizes sit in the 32-bit fields
    data = bytearray(saved.read_bytes())
    name = b"params.npy"
    at = 0
    while True:  # find params.npy's central directory record
        at = data.find(b"PK\x01\x02", at)
        n_name = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46:at + 46 + n_name] == name:
            break
        at += 4
    struct.pack_into("<I", data, at + 24, 0xFFFFFFF0)
    saved.write_bytes(bytes(data))
    rejected(saved, "params.npy", "declares")


def test_compressed_archive_still_loads(saved):
    """Re-zipped with deflate (e.g. by an archiver): still a valid model."""
    expected = load(saved)
    write_members(saved, members_of(saved), compression=zipfile.ZIP_DEFLATED)
    np.testing.assert_array_equal(load(saved).params, expected.params)


# -- bytes API -------------------------------------------------------------------------------
def test_from_bytes_errors(saved):
    with pytest.raises(TypeError):
        from_bytes("a string")
    with pytest.raises(ValueError, match="bytes.*empty"):
        from_bytes(b"")
    data = saved.read_bytes()
    with pytest.raises(ValueError, match="bytes"):
        from_bytes(data[:-10])
    np.testing.assert_array_equal(from_bytes(bytearray(data)).params, load(saved).params)
    np.testing.assert_array_equal(from_bytes(memoryview(data)).params, load(saved).params)


# -- format version 2: layer state buffer, node kinds by registry name ----------------------------
def test_format_2_writes_the_state_buffer(saved):
    members = members_of(saved)
    h = header_of(members)
    assert FORMAT_VERSION == 2 and h["format_version"] == 2
    assert h["arrays"]["state"] == {"dtype": "float32", "shape": [0],
                                    "sha256": hashlib.sha256(b"").hexdigest()}
    assert array_of(members["state.npy"]).shape == (0,)


def test_a_state_buffer_of_the_wrong_shape_is_refused(saved):
    def edit(members):
        put_array(members, "state", np.zeros(3, np.float32))
        h = header_of(members)
        h["arrays"]["state"]["shape"] = [3]
        put_header(members, h)
    tamper(saved, edit)
    rejected(saved, "state buffer has shape [3]")


def test_a_version_2_file_without_state_is_refused(saved):
    def drop_state(members):
        del members["state.npy"]
        h = header_of(members)
        del h["arrays"]["state"]
        put_header(members, h)
    tamper(saved, drop_state)
    rejected(saved, "lacks 'state'")


def test_a_version_1_file_may_not_carry_state(saved):
    tamper_header(saved, lambda h: h.update(format_version=1))
    rejected(saved, "unexpected array name 'state'")


def test_an_unknown_node_kind_is_refused(saved):
    def edit(h):
        h["config"]["layers"][0]["type"] = "NoSuchKind"
    tamper_header(saved, edit)
    rejected(saved, "registered layer kind")
