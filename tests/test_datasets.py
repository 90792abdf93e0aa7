import gzip
import hashlib
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from keras_spiking import datasets

# the project keeps full MNIST in shared/ beside the checkout (../shared/data/mnist)
REAL_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


# ------------------------------------------------------------------------------ Yin-Yang


@pytest.mark.parametrize("n", [5000, 1000, 7, 3, 1])
def test_yin_yang_exact_balance(n):
    _, y = datasets.yin_yang(n, seed=3)
    counts = np.bincount(y, minlength=3)
    q, m = divmod(n, 3)
    # the remainder goes to the lowest classes, one each
    assert counts.tolist() == [q + (c < m) for c in range(3)]


def test_yin_yang_geometry_known_points():
    pts = {
        (0.25, 0.5): 2,  # centre of the left dot
        (0.75, 0.5): 2,  # centre of the right dot
        (0.5, 0.9): 1,  # top of the figure: class 1 ("yang")
        (0.5, 0.1): 0,  # bottom of the figure: class 0 ("yin")
        (0.5, 0.75): 1,  # upper half, outside both half-size discs
        (0.5, 0.25): 0,
        (0.2, 0.35): 1,  # lower half, but inside the left half-size disc -> class 1
        (0.8, 0.65): 0,  # upper half, but inside the right half-size disc -> class 0
        (0.25, 0.38): 1,  # just outside the left dot (distance 0.12 > r = 0.1)
    }
    xy = np.array(list(pts))
    got = datasets.yin_yang_class(xy[:, 0], xy[:, 1])
    assert got.tolist() == list(pts.values())
    assert datasets.YIN_YANG_CLASS_NAMES == ("yin", "yang", "dot")


def test_yin_yang_samples_consistent_with_geometry():
    x, y = datasets.yin_yang(600, seed=1)
    assert x.shape == (600, 4) and x.dtype == np.float32 and y.dtype == np.int32
    # features are (u, v, 1-u, 1-v); float32 rounding of 1 - u is within 1e-6
    np.testing.assert_allclose(x[:, 2], 1 - x[:, 0], atol=1e-6)
    np.testing.assert_allclose(x[:, 3], 1 - x[:, 1], atol=1e-6)
    # all points lie in the big disc (radius 0.5 around (0.5, 0.5)); 1e-6 for float32
    assert np.all(np.hypot(x[:, 0] - 0.5, x[:, 1] - 0.5) <= 0.5 + 1e-6)
    # float32 rounding could move a point across a class boundary only with probability
    # ~1e-6 per point; seed 1 has none
    np.testing.assert_array_equal(datasets.yin_yang_class(x[:, 0], x[:, 1]), y)
    # every class has points on both sides of the vertical centre line (a real S-shape)
    for c in range(3):
        assert (x[y == c, 0] < 0.5).any() and (x[y == c, 0] > 0.5).any()


def test_yin_yang_seeds():
    a = datasets.yin_yang(300, seed=42)
    b = datasets.yin_yang(300, seed=42)
    c = datasets.yin_yang(300, seed=41)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.allclose(a[0], c[0])
    assert datasets.YIN_YANG_SEEDS == {
        "train": (5000, 42),
        "validation": (1000, 41),
        "test": (1000, 40),
    }


def test_yin_yang_rates_range_and_shuffled():
    x, y = datasets.yin_yang(900, seed=0, dtype="float64")
    assert x.dtype == np.float64
    assert x.min() >= 0 and x.max() <= 1
    # shuffled: labels are not sorted into blocks
    assert np.count_nonzero(np.diff(y)) > 100


def test_yin_yang_spike_times():
    rates, _ = datasets.yin_yang(200, seed=5, dtype="float64")
    t, _ = datasets.yin_yang(
        200, seed=5, encoding="spike_times", t_min=2e-3, t_max=12e-3, dtype="float64"
    )
    # same seed -> same points; exact linear map up to float64 rounding
    np.testing.assert_allclose(t, 2e-3 + rates * 10e-3, rtol=0, atol=1e-15)
    assert t.min() >= 2e-3 and t.max() <= 12e-3

    tb, _ = datasets.yin_yang(200, seed=5, encoding="spike_times", bias_spike=True)
    assert tb.shape == (200, 5)
    assert np.all(tb[:, 4] == 0)
    assert tb[:, :4].min() >= 0 and tb[:, :4].max() <= 30e-3


def test_yin_yang_other_radius_still_normalised():
    x, y = datasets.yin_yang(300, seed=0, r_big=2.0, r_small=0.3, dtype="float64")
    assert x.min() >= 0 and x.max() <= 1
    np.testing.assert_array_equal(
        datasets.yin_yang_class(4 * x[:, 0], 4 * x[:, 1], r_big=2.0, r_small=0.3), y
    )


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        ({"n_samples": 0}, ValueError, ["n_samples", "0"]),
        ({"n_samples": 2.5}, TypeError, ["n_samples", "2.5"]),
        ({"seed": -1}, ValueError, ["seed", "-1"]),
        ({"r_small": 0.3}, ValueError, ["r_small", "0.3"]),
        ({"r_big": -1.0}, ValueError, ["r_big", "-1.0"]),
        ({"encoding": "latency"}, ValueError, ["encoding", "latency", "spike_times"]),
        ({"encoding": "spike_times", "t_min": 0.05}, ValueError, ["t_min", "t_max"]),
        ({"bias_spike": True}, ValueError, ["bias_spike", "rates"]),
        ({"dtype": "int32"}, ValueError, ["dtype", "int32"]),
    ],
)
def test_yin_yang_errors(kwargs, exc, words):
    with pytest.raises(exc) as info:
        datasets.yin_yang(**kwargs)
    for w in words:
        assert w in str(info.value)


# ------------------------------------------------------------------------------ IDX / MNIST


def _idx_bytes(arr, magic):
    ndim = arr.ndim
    return struct.pack(f">I{ndim}I", magic, *arr.shape) + arr.astype(">u1").tobytes()


def _write(path, data, gz):
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


@pytest.fixture
def tiny_images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, tiny_images, gz):
    f = _write(tmp_path / "imgs-idx3-ubyte", _idx_bytes(tiny_images, 0x803), gz)
    out = datasets.read_idx(f, expected_magic=0x803)
    np.testing.assert_array_equal(out, tiny_images)
    assert out.dtype == np.uint8

    # a non-uint8 type code (int32, 0x0C) decodes with its own element size
    vals = np.array([[1, -2], [70000, 3]], dtype=">i4")
    raw = struct.pack(">III", 0x0C02, 2, 2) + vals.tobytes()
    f2 = _write(tmp_path / "ints", raw, gz)
    np.testing.assert_array_equal(datasets.read_idx(f2), vals.astype(np.int32))


def test_read_idx_errors(tmp_path, tiny_images):
    data = _idx_bytes(tiny_images, 0x803)
    f = tmp_path / "x-idx3-ubyte"
    f.write_bytes(data[:-5])
    with pytest.raises(ValueError, match="truncated IDX data"):
        datasets.read_idx(f)
    f.write_bytes(data[:10])
    with pytest.raises(ValueError, match="truncated IDX header"):
        datasets.read_idx(f)
    f.write_bytes(data + b"\0")
    with pytest.raises(ValueError, match="oversized"):
        datasets.read_idx(f)
    f.write_bytes(data)
    with pytest.raises(ValueError, match="0x00000803, expected 0x00000801"):
        datasets.read_idx(f, expected_magic=0x801)
    f.write_bytes(b"\x12\x34" + data[2:])
    with pytest.raises(ValueError, match="not an IDX file"):
        datasets.read_idx(f)
    with pytest.raises(FileNotFoundError, match="nope"):
        datasets.read_idx(tmp_path / "nope")
    bad_gz = tmp_path / "bad.gz"
    bad_gz.write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="bad.gz.*decompress"):
        datasets.read_idx(bad_gz)


def _damage(packed, how):
    """A damaged copy of a gzip file's bytes, and the error gzip itself raises on it."""
    damaged = bytearray(packed)
    if how == "deflate":
        damaged[10] ^= 0xFF  # first byte of the deflate stream (after the 10-byte header)
        return bytes(damaged), zlib.error
    if how == "crc":
        damaged[-8] ^= 0xFF  # the CRC-32 in the 8-byte trailer
        return bytes(damaged), gzip.BadGzipFile
    return bytes(damaged[: len(damaged) // 2]), EOFError  # cut in the middle


@pytest.mark.parametrize("how", ["deflate", "crc", "truncated"])
@pytest.mark.parametrize("through", ["read_idx", "mnist"])
def test_damaged_gzip_is_a_value_error_naming_the_file(tmp_path, tiny_images, how, through):
    labels = np.arange(6, dtype=np.uint8)
    _write_fake_mnist(tmp_path, tiny_images, labels, gz=True)
    images = next(tmp_path.glob("t10k-images*.gz"))
    damaged, raw_error = _damage(images.read_bytes(), how)
    images.write_bytes(damaged)
    # the damage is of the intended kind: gzip alone fails with it (zlib.error is not an
    # OSError, which the loader once caught alone)
    with pytest.raises(raw_error):
        gzip.decompress(damaged)
    with pytest.raises(ValueError, match=rf"{re.escape(images.name)}: cannot decompress gzip file"):
        if through == "read_idx":
            datasets.read_idx(images)
        else:
            datasets.mnist(split="test", path=tmp_path)


def _write_fake_mnist(folder, images, labels, gz, split="test"):
    folder.mkdir(parents=True, exist_ok=True)
    (img_name, _), (lbl_name, _) = datasets.MNIST_FILES[split]
    _write(folder / img_name, _idx_bytes(images, 0x803), gz)
    _write(folder / lbl_name, _idx_bytes(labels, 0x801), gz)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_local_checksum(tmp_path, tiny_images, gz):
    labels = np.arange(6, dtype=np.uint8)
    _write_fake_mnist(tmp_path, tiny_images, labels, gz)
    # our synthetic files are not MNIST, so their MD5 differs: the error names the file
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.*MD5.*verify=False"):
        datasets.mnist("test", path=tmp_path)

    x, y = datasets.mnist("test", path=tmp_path, verify=False)
    assert x.shape == (6, 28, 28) and x.dtype == np.float32
    # x / 255 in float32: exact to float32 rounding (rtol 1e-7)
    np.testing.assert_allclose(x, tiny_images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, labels)
    assert y.dtype == np.int32

    raw, _ = datasets.mnist(
        "test", path=tmp_path, verify=False, normalize=False, dtype="uint8", flatten=True
    )
    assert raw.shape == (6, 784) and raw.dtype == np.uint8
    np.testing.assert_array_equal(raw, tiny_images.reshape(6, -1))


def test_mnist_checksum_accepts_matching_md5(tmp_path, tiny_images, monkeypatch):
    labels = np.arange(6, dtype=np.uint8)
    _write_fake_mnist(tmp_path / "mnist", tiny_images, labels, gz=True)
    # pretend the published digests are those of our synthetic files (uncompressed bytes)
    img_md5 = hashlib.md5(_idx_bytes(tiny_images, 0x803)).hexdigest()
    lbl_md5 = hashlib.md5(_idx_bytes(labels, 0x801)).hexdigest()
    files = dict(datasets.MNIST_FILES)
    files["test"] = (("t10k-images-idx3-ubyte", img_md5), ("t10k-labels-idx1-ubyte", lbl_md5))
    monkeypatch.setattr(datasets, "MNIST_FILES", files)
    # found via the environment variable and the `mnist/` subfolder
    monkeypatch.setenv(datasets.DATA_ENV_VAR, str(tmp_path))
    x, y = datasets.mnist("test")
    np.testing.assert_array_equal(y, labels)
    assert x.shape == (6, 28, 28)


def test_mnist_mismatched_lengths(tmp_path, tiny_images):
    _write_fake_mnist(tmp_path, tiny_images, np.arange(5, dtype=np.uint8), gz=False)
    with pytest.raises(ValueError, match="6 images but .* 5 labels"):
        datasets.mnist("test", path=tmp_path, verify=False)


def test_mnist_missing_files_message(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as info:
        datasets.mnist("train", path=tmp_path)
    msg = str(info.value)
    for word in [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "path=",
        "KERAS_SPIKING_DATA",
        "tensorflow_datasets",
    ]:
        assert word in msg

    with pytest.raises(FileNotFoundError, match="is not a folder"):
        datasets.mnist("test", path=tmp_path / "nowhere")

    # no local folder and tensorflow_datasets fails (as it does offline)
    def fail(split):
        raise OSError("no network")

    monkeypatch.delenv(datasets.DATA_ENV_VAR, raising=False)
    monkeypatch.setattr(datasets, "_load_tfds", fail)
    with pytest.raises(RuntimeError) as info:
        datasets.mnist("test")
    msg = str(info.value)
    assert "no network" in msg and "t10k-images-idx3-ubyte" in msg and "KERAS_SPIKING_DATA" in msg


def test_mnist_tfds_fallback(monkeypatch):
    def fake(split):
        assert split == "test"
        return np.full((2, 28, 28), 255, np.uint8), np.array([3, 4])

    monkeypatch.delenv(datasets.DATA_ENV_VAR, raising=False)
    monkeypatch.setattr(datasets, "_load_tfds", fake)
    x, y = datasets.mnist("test", flatten=True)
    assert x.shape == (2, 784) and np.all(x == 1.0)
    assert y.tolist() == [3, 4] and y.dtype == np.int32


def test_mnist_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="split.*'validation'"):
        datasets.mnist("validation", path=tmp_path)
    with pytest.raises(ValueError, match="dtype.*normalize"):
        datasets.mnist("test", path=tmp_path, dtype="uint8")


@pytest.mark.skipif(not REAL_MNIST.is_dir(), reason="no local copy of MNIST")
def test_mnist_real_test_split():
    x, y = datasets.mnist("test", path=REAL_MNIST.parent)  # found via its `mnist/` subfolder
    assert x.shape == (10000, 28, 28)
    assert x.min() == 0.0 and x.max() == 1.0
    # the first test labels of the official distribution
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# ------------------------------------------------------------------------------ digits


def test_digits():
    x, y = datasets.digits()
    assert x.shape == (1797, 8, 8) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0
    tr_x, tr_y = datasets.digits(split="train", seed=1, flatten=True)
    te_x, te_y = datasets.digits(split="test", seed=1, flatten=True)
    assert tr_x.shape[1] == 64
    assert len(tr_y) + len(te_y) == 1797
    assert len(te_y) == int(np.ceil(0.25 * 1797))
    # stratified: each class's share of the test part is within one sample of 25%
    full = np.bincount(y)
    assert np.all(np.abs(np.bincount(te_y) - 0.25 * full) <= 1)
    # complementary parts: together they are the full data set (as a multiset of rows)
    both = np.concatenate([tr_x, te_x])
    assert np.isclose(both.sum(), x.sum(), rtol=1e-5)  # float32 sums of ~1e4 terms
    raw, _ = datasets.digits(normalize=False)
    assert raw.max() == 16.0


def test_digits_errors():
    with pytest.raises(ValueError, match="split.*'val'"):
        datasets.digits(split="val")
    with pytest.raises(ValueError, match="test_fraction.*1.5"):
        datasets.digits(split="test", test_fraction=1.5)
