"""Models to and from bytes and binary file objects (issue 13, item 7): ``model.save(f)``,
``fp.load(f)``, ``model.to_bytes()``, ``fp.from_bytes(b)``, with the validation of files."""
import io
import os
import pickle
import zipfile

import numpy as np
import pytest

import fastprop as fp
from fastprop.model import Sequential


def make_model(dtype="float32", steps=3):
    model = Sequential([fp.Dense(4, 8, activation="tanh", seed=1), fp.Dropout(0.2),
                        fp.Dense(8, 3, activation="softmax", seed=2)],
                       optimizer=fp.optim.Adam(lr=1e-2), dtype=dtype, seed=5)
    X, y = data()
    for _ in range(steps):
        model.train_step(X, y)
    return model


def data():
    rng = np.random.default_rng(3)
    return rng.standard_normal((24, 4)), rng.integers(0, 3, 24)


def assert_same(a, b):
    """Same config, parameters, optimizer state and RNG, and identical further training."""
    assert b.get_config() == a.get_config()
    np.testing.assert_array_equal(b.params, a.params)
    sa, ta = a.optimizer.get_state()
    sb, tb = b.optimizer.get_state()
    assert ta == tb and sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_array_equal(sb[k], sa[k])
    np.testing.assert_array_equal(b.get_rng_state(), a.get_rng_state())
    X, y = data()
    for _ in range(2):
        assert a.train_step(X, y) == b.train_step(X, y)
    np.testing.assert_array_equal(b.params, a.params)


@pytest.fixture(params=["float32", "float64"])
def model(request):
    return make_model(request.param)


def test_to_bytes_from_bytes(model):
    data = model.to_bytes()
    assert isinstance(data, bytes) and data[:4] == b"PK\x03\x04"
    assert_same(model, fp.from_bytes(data))


def test_to_bytes_is_the_file_save_writes(model, tmp_path):
    model.save(tmp_path / "m.fpz")
    assert (tmp_path / "m.fpz").read_bytes() == model.to_bytes() == fp.io.to_bytes(model)


def test_bytesio_round_trip(model):
    buf = io.BytesIO()
    model.save(buf)
    assert not buf.closed and buf.getvalue() == model.to_bytes()
    buf.seek(0)
    loaded = fp.load(buf)
    assert not buf.closed and buf.tell() == len(buf.getvalue())
    assert_same(model, loaded)


def test_stream_positions_are_respected(model):
    """save writes at the current position; load reads from the current position."""
    buf = io.BytesIO()
    buf.write(b"a prefix of 23 bytes...")
    model.save(buf)
    end = buf.tell()
    buf.write(b"trailing")
    buf.seek(23)
    loaded = fp.load(io.BytesIO(buf.getvalue()[23:end]))
    assert_same(model, loaded)


def test_open_file_round_trip(model, tmp_path):
    with open(tmp_path / "m.fpz", "wb") as f:
        f.write(b"")
        model.save(f)
        assert not f.closed
    with open(tmp_path / "m.fpz", "rb") as f:
        loaded = fp.load(f)
        assert not f.closed
    assert_same(model, loaded)


def test_unbuffered_file_round_trip(model, tmp_path):
    with open(tmp_path / "m.fpz", "wb", buffering=0) as f:
        model.save(f)
    with open(tmp_path / "m.fpz", "rb", buffering=0) as f:
        assert_same(model, fp.load(f))


class ShortWriter(io.RawIOBase):
    """A raw stream accepting at most 777 bytes per write, like a pipe or socket."""

    def __init__(self):
        self.data = bytearray()

    def writable(self):
        return True

    def write(self, b):
        n = min(len(b), 777)
        self.data += bytes(b[:n])
        return n


class ShortReader(io.RawIOBase):
    def __init__(self, data):
        self.data, self.pos = bytes(data), 0

    def readable(self):
        return True

    def readinto(self, b):
        n = min(len(b), 1000, len(self.data) - self.pos)
        b[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n


def test_short_writes_and_reads(model):
    w = ShortWriter()
    model.save(w)
    assert bytes(w.data) == model.to_bytes()
    assert_same(model, fp.load(ShortReader(w.data)))


def test_load_accepts_bytes_like(model):
    data = model.to_bytes()
    for form in (data, bytearray(data), memoryview(data)):
        np.testing.assert_array_equal(fp.load(form).params, model.params)
    np.testing.assert_array_equal(fp.from_bytes(memoryview(data)).params, model.params)


@pytest.mark.parametrize("junk", [b"", b"not a model", b"PK\x03\x04" + b"\0" * 100,
                                  np.zeros(10).tobytes()])
def test_bytes_that_are_not_a_model(junk):
    for call in (fp.from_bytes, fp.load, lambda b: fp.load(io.BytesIO(b))):
        with pytest.raises(ValueError, match="cannot load model from"):
            call(junk)


def test_damaged_streams_get_the_file_checks(model):
    data = model.to_bytes()
    for bad in (data[:-7], data[: len(data) // 2], data[:100]):
        with pytest.raises(ValueError, match="corrupt|truncat|not a"):
            fp.load(io.BytesIO(bad))
        with pytest.raises(ValueError):
            fp.from_bytes(bad)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        after_params = min(i.header_offset for i in zf.infolist() if i.filename != "header.npy"
                           and i.header_offset > zf.getinfo("params.npy").header_offset)
    flipped = bytearray(data)
    flipped[after_params - 1] ^= 0x10  # the last byte of the parameters
    with pytest.raises(ValueError):
        fp.load(io.BytesIO(bytes(flipped)))


def test_error_names_the_file_object(tmp_path):
    (tmp_path / "junk.bin").write_bytes(b"junk")
    with open(tmp_path / "junk.bin", "rb") as f:
        with pytest.raises(ValueError, match="junk.bin"):
            fp.load(f)


def test_text_mode_files_refused(model, tmp_path):
    with open(tmp_path / "t.txt", "w") as f:
        with pytest.raises(TypeError, match="binary"):
            model.save(f)
    assert (tmp_path / "t.txt").read_bytes() == b""
    with open(tmp_path / "t.txt", "r") as f:
        with pytest.raises(TypeError, match="binary"):
            fp.load(f)
    with pytest.raises(TypeError, match="binary"):
        fp.load(io.StringIO("PK"))


def test_reader_returning_str_refused():
    class Bad:
        def read(self, n=-1):
            return "text"
    with pytest.raises(TypeError, match="binary"):
        fp.load(Bad())


def test_failed_save_writes_nothing_to_the_stream(model):
    model.params[0] = np.nan
    buf = io.BytesIO()
    with pytest.raises(ValueError, match="NaN"):
        model.save(buf)
    assert buf.getvalue() == b""
    with pytest.raises(ValueError, match="NaN"):
        model.to_bytes()


def test_nonblocking_raw_stream_that_would_block():
    class WouldBlock(io.RawIOBase):
        def writable(self):
            return True

        def readable(self):
            return True

        def write(self, b):
            return None

        def readinto(self, b):
            return None
    with pytest.raises(BlockingIOError):
        make_model().save(WouldBlock())
    with pytest.raises(BlockingIOError):
        fp.load(WouldBlock())


def test_other_types_refused(model):
    for bad in (123, None, 1.5, object()):
        with pytest.raises(TypeError, match="path"):
            model.save(bad)
        with pytest.raises(TypeError, match="path"):
            fp.load(bad)
    with pytest.raises(TypeError, match="data"):
        fp.from_bytes("a string")


def test_stream_read_bounded_by_available_memory(monkeypatch, model):
    monkeypatch.setattr(fp.io.V, "_available_memory", lambda: 1000)
    with pytest.raises(ValueError, match="memory"):
        fp.load(io.BytesIO(model.to_bytes()))


def test_pickle_still_goes_through_bytes(model):
    assert_same(model, pickle.loads(pickle.dumps(model)))


def test_exported_names():
    assert fp.from_bytes is fp.io.from_bytes and "from_bytes" in fp.__all__
    assert callable(Sequential.to_bytes)
    assert os.path.basename(fp.io.__file__) == "io.py"


def test_bytes_naming_a_file_get_a_hint(model, tmp_path):
    model.save(tmp_path / "m.fpz")
    with pytest.raises(ValueError, match="pass the name as a str"):
        fp.load(os.fsencode(tmp_path / "m.fpz"))
    np.testing.assert_array_equal(fp.load(str(tmp_path / "m.fpz")).params, model.params)
