"""Small classification data sets for spiking networks.

Three loaders, all returning NumPy arrays ``(inputs, labels)`` with integer labels:

* :func:`yin_yang`: the Yin-Yang data set of Kriener, Göltz & Petrovici (2021), generated
  on the fly, as rates in ``[0, 1]`` or as spike times in seconds.
* :func:`mnist`: MNIST read from local IDX files (checked against known MD5 sums) or, failing
  that, through ``tensorflow_datasets``.
* :func:`digits`: scikit-learn's 8 x 8 handwritten digits, scaled to ``[0, 1]``.

Nothing here touches the network unless :func:`mnist` falls back to ``tensorflow_datasets``.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "yin_yang",
    "yin_yang_class",
    "YIN_YANG_CLASS_NAMES",
    "YIN_YANG_SEEDS",
    "mnist",
    "read_idx",
    "MNIST_FILES",
    "DATA_ENV_VAR",
    "digits",
]

# --------------------------------------------------------------------------------------------
# Yin-Yang
# --------------------------------------------------------------------------------------------

#: Names of the Yin-Yang classes, indexed by label (same order as the reference code).
YIN_YANG_CLASS_NAMES: tuple[str, str, str] = ("yin", "yang", "dot")

#: The seeds and sizes of the splits used in the literature (reference repository README):
#: ``{"train": (5000, 42), "validation": (1000, 41), "test": (1000, 40)}`` as ``(n, seed)``.
#: They are only conventions: pass them as ``yin_yang(n, seed=seed)``. Using different seeds
#: for different splits matters, since equal seeds give identical samples.
YIN_YANG_SEEDS: dict[str, tuple[int, int]] = {
    "train": (5000, 42),
    "validation": (1000, 41),
    "test": (1000, 40),
}


def _check_positive_float(value: Any, name: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"`{name}` must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"`{name}` must be a finite number {bound}, got {value!r}")
    return value


def _check_int(value: Any, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_float_dtype(dtype: Any, name: str = "dtype") -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"`{name}` must be a NumPy dtype or its name, got {dtype!r}") from None
    if not np.issubdtype(dt, np.floating):
        raise ValueError(f"`{name}` must be a floating-point dtype, got {dtype!r}")
    return dt


def yin_yang_class(
    x: np.ndarray | float,
    y: np.ndarray | float,
    *,
    r_big: float = 0.5,
    r_small: float = 0.1,
) -> np.ndarray:
    r"""Class of points ``(x, y)`` of the Yin-Yang figure (coordinates in ``[0, 2 R]``).

    The figure lies in the disc of radius ``R = r_big`` centred at ``(R, R)``. Two half-size
    discs of radius ``R / 2`` sit on its horizontal diameter, centred at
    ``c_l = (R / 2, R)`` (left) and ``c_r = (3 R / 2, R)`` (right); their centres carry the two
    "eyes", discs of radius ``r = r_small``. With ``d_l = |p - c_l|`` and ``d_r = |p - c_r|``:

    .. math::

        \text{class}(p) = \begin{cases}
            2 \;(\text{dot}) & d_l < r \;\lor\; d_r < r \\
            1 \;(\text{yang}) & d_l \le R/2 \;\lor\; (y > R \land d_r > R/2) \\
            0 \;(\text{yin}) & \text{otherwise}
        \end{cases}

    So class 1 is the upper half (``y > R``) without the right half-size disc, plus the left
    half-size disc; class 0 is its mirror image (the lower half without the left disc, plus
    the right disc). The boundary between them is the S-curve made of the lower arc of the
    left disc and the upper arc of the right disc. This is the rule of the reference code of
    Kriener et al. (2021) (``lkriener/yin_yang_data_set``), including its labels: its
    ``which_class`` returns 1 for the region it calls "is_yin", while its ``class_names``
    list is ``['yin', 'yang', 'dot']``; we keep the numeric labels (which is what published
    results use) and the ``class_names`` order, see :data:`YIN_YANG_CLASS_NAMES`.

    Note the eyes lie on the *horizontal* diameter, at ``(0.25, 0.5)`` and ``(0.75, 0.5)`` for
    the default ``R = 0.5``; ``(0.5, 0.75)`` is class 1 and ``(0.5, 0.25)`` class 0.

    Points outside the big disc are not checked here (:func:`yin_yang` never produces them).

    Args:
        x: horizontal coordinate(s), any shape.
        y: vertical coordinate(s), broadcastable with ``x``.
        r_big: radius ``R`` of the big disc.
        r_small: radius ``r`` of the dots.

    Returns:
        Integer array of labels (0, 1 or 2), of the broadcast shape of ``x`` and ``y``.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    d_left = np.hypot(x - 0.5 * r_big, y - r_big)
    d_right = np.hypot(x - 1.5 * r_big, y - r_big)
    is_dot = (d_left < r_small) | (d_right < r_small)
    is_one = (d_left <= 0.5 * r_big) | ((y > r_big) & (d_right > 0.5 * r_big))
    return np.where(is_dot, 2, np.where(is_one, 1, 0)).astype(np.int32)


def yin_yang(
    n_samples: int = 5000,
    *,
    seed: int = 0,
    r_big: float = 0.5,
    r_small: float = 0.1,
    encoding: str = "rates",
    t_max: float = 30e-3,
    t_min: float = 0.0,
    bias_spike: bool = False,
    dtype: Any = "float32",
) -> tuple[np.ndarray, np.ndarray]:
    """The Yin-Yang data set (Kriener, Göltz & Petrovici 2021, arXiv:2102.08211).

    Points ``p = (x, y)`` are drawn uniformly from the square ``[0, 2 R]^2`` and kept if they
    lie inside the disc of radius ``R = r_big`` centred at ``(R, R)`` (rejection sampling);
    each kept point is labelled by :func:`yin_yang_class` (0 = yin, 1 = yang, 2 = dot).

    Classes are **exactly** balanced: a drawn point is also rejected when its class already
    has its quota. With ``n_samples = 3 q + m``, every class gets ``q`` samples and classes
    ``0 .. m - 1`` get one more (so ``n = 5000`` gives 1667 / 1667 / 1666). The samples are
    shuffled before they are returned. (The reference code instead draws a random target
    class per sample, so its classes are only balanced on average, and it uses NumPy's legacy
    global RNG; for that reason this function does not reproduce its exact samples.)

    The 4 input features are the normalised coordinates and their mirror images,
    ``(u, v, 1 - u, 1 - v)`` with ``u = x / (2 R)`` and ``v = y / (2 R)``, all in ``[0, 1]``;
    for the standard ``R = 0.5`` this is the reference ``(x, y, 1 - x, 1 - y)``. The mirrored
    pair lets networks without biases see every point through some strong input.

    Encodings:

    * ``"rates"``: the features themselves, shape ``[n, 4]``.
    * ``"spike_times"``: one spike per input at
      ``t = t_min + feature * (t_max - t_min)`` seconds, shape ``[n, 4]``; with
      ``bias_spike=True`` a fifth column holds a bias input that always spikes at
      ``t = 0`` s. (Göltz et al. use the same linear time code, with their own time units.)

    The splits used in the literature are 5000 samples with seed 42 (train), 1000 with seed 41
    (validation) and 1000 with seed 40 (test), see :data:`YIN_YANG_SEEDS`; here they are just
    conventions for ``seed``. Use different seeds for different splits.

    Args:
        n_samples: number of samples ``n``, >= 1.
        seed: seed (int >= 0) of the NumPy generator; the same seed gives the same data.
        r_big: radius ``R`` of the big disc (> 0); only sets the scale before normalisation.
        r_small: radius ``r`` of the dots, ``0 < r < R / 2``.
        encoding: ``"rates"`` or ``"spike_times"``.
        t_max: spike time of a feature equal to 1, seconds (``"spike_times"`` only).
        t_min: spike time of a feature equal to 0, seconds, ``0 <= t_min < t_max``.
        bias_spike: add a bias input spiking at ``t = 0`` (``"spike_times"`` only).
        dtype: floating-point dtype of the inputs.

    Returns:
        ``(inputs, labels)``: ``inputs`` of shape ``[n, 4]`` (``[n, 5]`` with a bias spike) in
        ``dtype``, and int32 ``labels`` of shape ``[n]`` with values in ``{0, 1, 2}``.

    Raises:
        ValueError: for out-of-range arguments.
        TypeError: for arguments of the wrong type.
    """
    n_samples = _check_int(n_samples, "n_samples", minimum=1)
    seed = _check_int(seed, "seed", minimum=0)
    r_big = _check_positive_float(r_big, "r_big")
    r_small = _check_positive_float(r_small, "r_small")
    if not r_small < 0.5 * r_big:
        raise ValueError(
            f"`r_small` must be smaller than r_big / 2 = {0.5 * r_big!r} so the dots fit in "
            f"the half-size discs, got r_small={r_small!r}"
        )
    if encoding not in ("rates", "spike_times"):
        raise ValueError(f"`encoding` must be 'rates' or 'spike_times', got {encoding!r}")
    t_max = _check_positive_float(t_max, "t_max")
    t_min = _check_positive_float(t_min, "t_min", allow_zero=True)
    if not t_min < t_max:
        raise ValueError(
            f"`t_min` must be smaller than `t_max`, got t_min={t_min!r}, t_max={t_max!r}"
        )
    if not isinstance(bias_spike, (bool, np.bool_)):
        raise TypeError(f"`bias_spike` must be a bool, got {bias_spike!r}")
    if bias_spike and encoding != "spike_times":
        raise ValueError(
            f"`bias_spike=True` needs encoding='spike_times', got encoding={encoding!r}"
        )
    dt = _check_float_dtype(dtype)

    rng = np.random.default_rng(seed)
    quota = np.full(3, n_samples // 3)
    quota[: n_samples % 3] += 1
    counts = np.zeros(3, dtype=np.int64)
    xs, ys, cs = [], [], []
    while (counts < quota).any():
        # Vectorised rejection: draw a batch, keep in-disc points whose class still has room,
        # in draw order. The dots cover ~8% of the disc, so a class-2 quota needs ~4 n draws.
        batch = max(1024, 4 * int((quota - counts).sum()))
        pts = rng.uniform(0.0, 2.0 * r_big, size=(batch, 2))
        inside = np.hypot(pts[:, 0] - r_big, pts[:, 1] - r_big) <= r_big
        pts = pts[inside]
        labels = yin_yang_class(pts[:, 0], pts[:, 1], r_big=r_big, r_small=r_small)
        for c in range(3):
            take = pts[labels == c][: quota[c] - counts[c]]
            counts[c] += len(take)
            xs.append(take[:, 0])
            ys.append(take[:, 1])
            cs.append(np.full(len(take), c, dtype=np.int32))
    x = np.concatenate(xs)
    y = np.concatenate(ys)
    labels = np.concatenate(cs)
    order = rng.permutation(n_samples)
    x, y, labels = x[order], y[order], labels[order]

    u = x / (2.0 * r_big)
    v = y / (2.0 * r_big)
    features = np.stack([u, v, 1.0 - u, 1.0 - v], axis=1)
    # Rounding can leave values a few ulp outside [0, 1]; the encodings promise the range.
    features = np.clip(features, 0.0, 1.0)
    if encoding == "spike_times":
        features = t_min + features * (t_max - t_min)
        if bias_spike:
            features = np.concatenate([features, np.zeros((n_samples, 1))], axis=1)
    return features.astype(dt), labels


# --------------------------------------------------------------------------------------------
# IDX files and MNIST
# --------------------------------------------------------------------------------------------

#: Environment variable naming a folder that holds data files (MNIST IDX files, directly or in
#: an ``mnist/`` subfolder).
DATA_ENV_VAR = "KERAS_SPIKING_DATA"

#: The MNIST IDX files per split, as ``(file name, md5 of the uncompressed bytes)`` for
#: ``(images, labels)``. A ``.gz`` version of each name is also accepted.
MNIST_FILES: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "train": (
        ("train-images-idx3-ubyte", "6bbc9ace898e44ae57da46a324031adb"),
        ("train-labels-idx1-ubyte", "a25bea736e30d166cdddb491f175f624"),
    ),
    "test": (
        ("t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea"),
        ("t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637"),
    ),
}

# IDX element types: type code -> big-endian NumPy dtype.
_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _parse_idx(data: bytes, source: str, expected_magic: int | None = None) -> np.ndarray:
    """Decode the bytes of an (uncompressed) IDX file; see :func:`read_idx`."""
    if len(data) < 4:
        raise ValueError(
            f"{source}: truncated IDX file, {len(data)} bytes is shorter than the "
            "4-byte magic number"
        )
    (magic,) = struct.unpack(">I", data[:4])
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(
            f"{source}: IDX magic number is 0x{magic:08X}, expected 0x{expected_magic:08X}"
        )
    if magic >> 16 != 0 or (magic >> 8) & 0xFF not in _IDX_TYPES:
        raise ValueError(
            f"{source}: not an IDX file (magic number 0x{magic:08X}; expected "
            "0x0000TTDD with a known type code TT)"
        )
    elem = _IDX_TYPES[(magic >> 8) & 0xFF]
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(
            f"{source}: truncated IDX header, {len(data)} bytes, need {header} "
            f"for {ndim} dimensions"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = math.prod(shape) * elem.itemsize
    if len(data) - header != expected:
        kind = "truncated" if len(data) - header < expected else "oversized"
        raise ValueError(
            f"{source}: {kind} IDX data, header says shape {shape} "
            f"({expected} bytes of data), file has {len(data) - header}"
        )
    arr = np.frombuffer(data, dtype=elem, offset=header).reshape(shape)
    return arr.astype(elem.newbyteorder("="))


def _read_bytes(path: Path) -> bytes:
    if path.name.endswith(".gz"):
        try:
            with gzip.open(path, "rb") as f:
                return f.read()
        # a damaged file fails in one of three ways: a bad header or CRC (gzip.BadGzipFile,
        # an OSError), a corrupt deflate stream (zlib.error, not an OSError) or a file cut
        # short (EOFError); all are the file's fault, so all are the ValueError documented
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(
                f"{path}: cannot decompress gzip file, it is damaged or incomplete "
                f"({type(err).__name__}: {err})"
            ) from err
    return path.read_bytes()


def read_idx(
    path: str | os.PathLike,
    *,
    expected_magic: int | None = None,
    md5: str | None = None,
) -> np.ndarray:
    """Read an IDX file (the format of the MNIST distribution), raw or gzip-compressed.

    An IDX file is a big-endian 4-byte magic number ``0x0000TTDD`` (``TT`` the element type:
    0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64; ``DD`` the
    number of dimensions), then ``DD`` big-endian uint32 sizes, then the elements in C order.
    MNIST images are ``0x00000803`` (``[n, 28, 28]`` uint8), labels ``0x00000801``.

    Args:
        path: the file; a name ending in ``.gz`` is decompressed first.
        expected_magic: if given, the magic number the file must have.
        md5: if given, the hex MD5 digest the *uncompressed* bytes must have.

    Returns:
        The array, in native byte order.

    Raises:
        ValueError: on a checksum mismatch, a wrong magic number, or a truncated or oversized
            file (the message names the file).
        FileNotFoundError: if the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    data = _read_bytes(path)
    if md5 is not None:
        digest = hashlib.md5(data).hexdigest()
        if digest != md5.lower():
            raise ValueError(
                f"{path}: MD5 of the uncompressed data is {digest}, expected {md5} "
                "(corrupt or different file; pass verify=False to skip the check)"
            )
    return _parse_idx(data, str(path), expected_magic)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for base in (folder, folder / "mnist"):
        for name in (stem, stem + ".gz"):
            if (base / name).is_file():
                return base / name
    return None


def _missing_message(split: str, where: str) -> str:
    names = ", ".join(f"{stem}[.gz]" for stem, _ in MNIST_FILES[split])
    return (
        f"MNIST split {split!r} not found: {where}. Put the IDX files {names} in a folder "
        f"(or in its `mnist/` subfolder) and pass it as `path=` or set the environment "
        f"variable {DATA_ENV_VAR}; or make `tensorflow_datasets` able to load 'mnist' "
        "(pip install tensorflow-datasets, with internet access or a prepared data_dir)."
    )


def _load_tfds(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Load an MNIST split with tensorflow_datasets (may download)."""
    import tensorflow_datasets as tfds

    images, labels = tfds.as_numpy(
        tfds.load("mnist", split=split, batch_size=-1, as_supervised=True)
    )
    return np.asarray(images)[..., 0], np.asarray(labels)


def mnist(
    split: str = "train",
    *,
    path: str | os.PathLike | None = None,
    flatten: bool = False,
    normalize: bool = True,
    dtype: Any = "float32",
    verify: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Load MNIST (60000 training and 10000 test images of 28 x 28 pixels).

    Lookup order:

    1. ``path`` if given, else the folder named by the environment variable
       ``KERAS_SPIKING_DATA`` if set: the split's two IDX files (see :data:`MNIST_FILES`;
       e.g. ``train-images-idx3-ubyte`` or ``train-images-idx3-ubyte.gz``) are read from that
       folder or its ``mnist/`` subfolder. Missing files there are an error: an explicit
       location never falls back silently.
    2. Otherwise ``tensorflow_datasets`` (``tfds.load("mnist", ...)``), which may download.

    With ``verify=True``, the MD5 of each file's *uncompressed* bytes must match the
    published digest, so a ``.gz`` and a raw copy verify alike.

    Args:
        split: ``"train"`` or ``"test"``.
        path: folder holding the IDX files (or an ``mnist/`` subfolder with them).
        flatten: return images as ``[n, 784]`` instead of ``[n, 28, 28]``.
        normalize: divide the pixel values (0..255) by 255, giving values in ``[0, 1]``.
        dtype: dtype of the images (e.g. ``"uint8"`` with ``normalize=False`` for raw bytes).
        verify: check the MD5 digests of local files.

    Returns:
        ``(images, labels)``: images ``[n, 28, 28]`` (or ``[n, 784]``) in ``dtype``; int32
        labels ``[n]`` in ``0..9``.

    Raises:
        ValueError: for bad arguments, or local files that fail the MD5 / format checks.
        FileNotFoundError: if ``path`` / ``KERAS_SPIKING_DATA`` lack the split's files.
        RuntimeError: if no local folder is configured and ``tensorflow_datasets`` fails.
    """
    if split not in MNIST_FILES:
        raise ValueError(f"`split` must be 'train' or 'test', got {split!r}")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"`dtype` must be a NumPy dtype or its name, got {dtype!r}") from None
    if normalize and not np.issubdtype(dt, np.floating):
        raise ValueError(f"`dtype` must be floating point when normalize=True, got {dtype!r}")

    folder = path if path is not None else os.environ.get(DATA_ENV_VAR) or None
    if folder is not None:
        folder = Path(folder)
        source = "`path`" if path is not None else f"${DATA_ENV_VAR}"
        if not folder.is_dir():
            raise FileNotFoundError(
                _missing_message(split, f"{source}={str(folder)!r} is not a folder")
            )
        (img_stem, img_md5), (lbl_stem, lbl_md5) = MNIST_FILES[split]
        found = {stem: _find_idx(folder, stem) for stem in (img_stem, lbl_stem)}
        missing = [stem for stem, f in found.items() if f is None]
        if missing:
            raise FileNotFoundError(
                _missing_message(
                    split, f"{source}={str(folder)!r} has no {' or '.join(missing)}[.gz]"
                )
            )
        images = read_idx(
            found[img_stem], expected_magic=0x00000803, md5=img_md5 if verify else None
        )
        labels = read_idx(
            found[lbl_stem], expected_magic=0x00000801, md5=lbl_md5 if verify else None
        )
        if len(images) != len(labels):
            raise ValueError(
                f"{found[img_stem]} has {len(images)} images but "
                f"{found[lbl_stem]} has {len(labels)} labels"
            )
    else:
        try:
            images, labels = _load_tfds(split)
        except Exception as err:  # ImportError, download/network errors, ...
            raise RuntimeError(
                _missing_message(
                    split,
                    f"no local folder configured and tensorflow_datasets failed "
                    f"({type(err).__name__}: {err})",
                )
            ) from err

    images = images.astype(dt)
    if normalize:
        images /= dt.type(255)
    if flatten:
        images = images.reshape(len(images), -1)
    return images, labels.astype(np.int32)


# --------------------------------------------------------------------------------------------
# scikit-learn digits
# --------------------------------------------------------------------------------------------


def digits(
    *,
    split: str | None = None,
    test_fraction: float = 0.25,
    seed: int = 0,
    normalize: bool = True,
    flatten: bool = False,
    dtype: Any = "float32",
) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8 x 8 handwritten digits (1797 images, 10 classes, no download).

    Pixel values are integers 0..16; with ``normalize`` they are divided by 16, giving values
    in ``[0, 1]`` (usable directly as spike probabilities or latencies).

    With ``split`` given, the data are split by ``sklearn.model_selection.train_test_split``
    with ``stratify=labels`` (each class keeps its proportion in both parts) and
    ``random_state=seed``; the same ``seed`` and ``test_fraction`` give complementary train and
    test parts.

    Args:
        split: ``None`` for all 1797 samples, or ``"train"`` / ``"test"``.
        test_fraction: fraction of the samples in the test part, in ``(0, 1)``.
        seed: seed of the split (int >= 0).
        normalize: divide by 16.
        flatten: return ``[n, 64]`` instead of ``[n, 8, 8]``.
        dtype: floating-point dtype of the images.

    Returns:
        ``(images, labels)``: images ``[n, 8, 8]`` (or ``[n, 64]``), int32 labels ``[n]``.

    Raises:
        ImportError: if scikit-learn is not installed.
        ValueError: for bad arguments.
    """
    if split not in (None, "train", "test"):
        raise ValueError(f"`split` must be None, 'train' or 'test', got {split!r}")
    test_fraction = _check_positive_float(test_fraction, "test_fraction")
    if not test_fraction < 1:
        raise ValueError(f"`test_fraction` must be in (0, 1), got {test_fraction!r}")
    seed = _check_int(seed, "seed", minimum=0)
    dt = _check_float_dtype(dtype)
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as err:
        raise ImportError(
            "keras_spiking.datasets.digits needs scikit-learn: pip install scikit-learn"
        ) from err

    bunch = load_digits()
    images = bunch.images.astype(dt)
    labels = bunch.target.astype(np.int32)
    if split is not None:
        train_x, test_x, train_y, test_y = train_test_split(
            images, labels, test_size=test_fraction, random_state=seed, stratify=labels
        )
        images, labels = (train_x, train_y) if split == "train" else (test_x, test_y)
    if normalize:
        images = images / dt.type(16)
    if flatten:
        images = images.reshape(len(images), -1)
    return images, labels
