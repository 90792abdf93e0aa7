"""Event-camera data: readers against hand-made files, binning against hand loops, tf.data.

The N-MNIST files are written here byte by byte in the published 5-byte layout (the encoder
below is written from the format description, and one event is also spelled out in raw
bytes), then read back; damaged files must give a ValueError naming the file and the problem.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import tensorflow as tf

from keras_spiking import event_data as ed

SENSOR = ed.NMNIST_SENSOR_SIZE


def encode_nmnist(events: np.ndarray) -> bytes:
    """The N-MNIST byte stream: x, y, then polarity (bit 23) and 23-bit time, big-endian."""
    t = events["t"].astype(np.int64)
    assert np.all((t >= 0) & (t < 2**23))
    out = np.zeros((len(events), 5), np.uint8)
    out[:, 0] = events["x"]
    out[:, 1] = events["y"]
    out[:, 2] = (events["p"].astype(np.int64) << 7) | (t >> 16)
    out[:, 3] = (t >> 8) & 0xFF
    out[:, 4] = t & 0xFF
    return out.tobytes()


def random_events(rng, n, sensor=SENSOR, t_max=300_000):
    return ed.make_events(
        rng.integers(0, sensor[1], n),
        rng.integers(0, sensor[0], n),
        np.sort(rng.integers(0, t_max, n)),
        rng.integers(0, 2, n),
    )


def write_bin(path, events):
    path.write_bytes(encode_nmnist(events))
    return path


def named(path, problem):
    """A pytest.raises pattern: the file's name, then the problem."""
    return re.escape(str(path)) + ".*" + problem


# --------------------------------------------------------------------------------------------
# N-MNIST reader
# --------------------------------------------------------------------------------------------


def test_nmnist_layout_from_raw_bytes(tmp_path):
    # x=5, y=7, ON, t=0x010203 us; x=33, y=0, OFF, t = 2**23 - 1 (the largest time)
    path = tmp_path / "two.bin"
    path.write_bytes(bytes([5, 7, 0x81, 0x02, 0x03, 33, 0, 0x7F, 0xFF, 0xFF]))
    events = ed.read_nmnist(path)
    assert events.dtype == ed.EVENT_DTYPE
    assert events.tolist() == [(5, 7, 0x010203, 1), (33, 0, 2**23 - 1, 0)]


def test_nmnist_round_trip(tmp_path, rng):
    events = random_events(rng, 500, t_max=2**23)
    events["x"][:2], events["y"][:2] = 33, 33  # the sensor's last pixel
    read = ed.read_nmnist(write_bin(tmp_path / "00001.bin", events))
    np.testing.assert_array_equal(read, events)


def test_nmnist_sorting(tmp_path):
    events = ed.make_events([1, 2, 3], [1, 1, 1], [30, 10, 10], [0, 1, 0])
    path = write_bin(tmp_path / "unsorted.bin", events)
    # stable: the two events at t=10 keep the file's order
    assert ed.read_nmnist(path)["x"].tolist() == [2, 3, 1]
    with pytest.raises(ValueError, match=named(path, "timestamps decrease at event 1")):
        ed.read_nmnist(path, sort=False)


def test_nmnist_truncated(tmp_path, rng):
    path = tmp_path / "cut.bin"
    path.write_bytes(encode_nmnist(random_events(rng, 10))[:-2])
    with pytest.raises(ValueError, match=named(path, "truncated.*48 bytes.*not a multiple")):
        ed.read_nmnist(path)


def test_nmnist_coordinates_outside_the_sensor(tmp_path):
    path = write_bin(tmp_path / "bad.bin", ed.make_events([3, 40], [1, 2], [0, 5], [0, 1]))
    with pytest.raises(ValueError, match=named(path, "x outside the sensor's width of 34")):
        ed.read_nmnist(path)
    assert ed.read_nmnist(path, sensor_size=(64, 64)).size == 2
    path = write_bin(tmp_path / "bad_y.bin", ed.make_events([3], [34], [0], [0]))
    with pytest.raises(ValueError, match=named(path, "y outside the sensor's height")):
        ed.read_nmnist(path)


def test_nmnist_empty_and_missing(tmp_path):
    path = tmp_path / "empty.bin"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=named(path, "empty N-MNIST file")):
        ed.read_nmnist(path)
    empty = ed.read_nmnist(path, allow_empty=True)
    assert empty.size == 0 and empty.dtype == ed.EVENT_DTYPE
    with pytest.raises(FileNotFoundError, match="nope.bin"):
        ed.read_nmnist(tmp_path / "nope.bin")


# --------------------------------------------------------------------------------------------
# .npy / .npz reader
# --------------------------------------------------------------------------------------------


@pytest.fixture
def events5():
    return ed.make_events([0, 4, 2, 7, 1], [3, 0, 5, 1, 1], [0, 10, 10, 25, 40], [1, 0, 1, 1, 0])


def test_npy_structured_and_columns(tmp_path, events5):
    extra = np.zeros(5, [("t", "f8"), ("p", "?"), ("x", "i4"), ("y", "u1"), ("extra", "f4")])
    for f in "xytp":
        extra[f] = events5[f]
    np.save(tmp_path / "s.npy", extra)
    np.testing.assert_array_equal(ed.read_event_array(tmp_path / "s.npy"), events5)
    columns = np.stack([events5[f].astype(np.float64) for f in "xytp"], axis=1)
    np.save(tmp_path / "c.npy", columns)
    np.testing.assert_array_equal(ed.read_event_array(tmp_path / "c.npy"), events5)
    np.testing.assert_array_equal(ed.read_events(tmp_path / "c.npy"), events5)


def test_npz_layouts_and_polarity_mapping(tmp_path, events5):
    np.savez(tmp_path / "a.npz", **{f: events5[f] for f in "xytp"})
    np.savez(tmp_path / "b.npz", events=events5, other=np.zeros(3))
    np.savez_compressed(tmp_path / "c.npz", events5)
    for name in ("a", "b", "c"):
        np.testing.assert_array_equal(ed.read_event_array(tmp_path / f"{name}.npz"), events5)
    signed = {f: events5[f] for f in "xyt"} | {"p": np.where(events5["p"] == 1, 1, -1)}
    np.savez(tmp_path / "signed.npz", **signed)
    np.testing.assert_array_equal(ed.read_event_array(tmp_path / "signed.npz"), events5)


def test_npy_sorting(tmp_path, events5):
    np.save(tmp_path / "u.npy", events5[::-1])
    np.testing.assert_array_equal(ed.read_event_array(tmp_path / "u.npy"), events5[[0, 2, 1, 3, 4]])
    with pytest.raises(ValueError, match="u.npy: timestamps decrease"):
        ed.read_event_array(tmp_path / "u.npy", sort=False)


def _columns(events, **changes):
    cols = {f: events[f].astype(np.float64) for f in "xytp"}
    cols.update(changes)
    return cols


@pytest.mark.parametrize(
    "changes, problem",
    [
        ({"t": np.array([0, 1, np.nan, 3, 4])}, "field 't' has 1 non-finite value.*event 2"),
        ({"t": np.array([0, 0.5, 1, 2, 3])}, "'t' has fractional values.*seconds"),
        ({"x": np.array([0, -1, 2, 3, 4.0])}, "'x' must hold pixel coordinates.*x=-1"),
        ({"p": np.array([0, 1, 2, 1, 0.0])}, r"polarity 'p' must be 0/1.*\[0, 1, 2\]"),
        ({"p": np.array([0, 1, -1, 1, 0.0])}, "polarity 'p' must be 0/1"),
        ({"y": np.arange(4.0)}, "differ in length"),
        ({"x": np.array(["a"] * 5)}, "'x' must hold numbers"),
    ],
    ids=["nan-t", "fractional-t", "negative-x", "p=2", "p=-1,0,1", "lengths", "strings"],
)
def test_npz_bad_fields(tmp_path, events5, changes, problem):
    path = tmp_path / "bad.npz"
    np.savez(path, **_columns(events5, **changes))
    with pytest.raises(ValueError, match=named(path, problem)):
        ed.read_event_array(path)


def test_npy_bad_layouts(tmp_path, events5):
    path = tmp_path / "nofield.npy"
    np.save(path, np.zeros(3, [("x", "i4"), ("y", "i4"), ("t", "i8")]))
    with pytest.raises(ValueError, match=named(path, r"lacks the field\(s\) \['p'\]")):
        ed.read_event_array(path)
    path = tmp_path / "three.npy"
    np.save(path, np.zeros((4, 3)))
    with pytest.raises(ValueError, match=named(path, r"\[n, 4\] array.*shape \(4, 3\)")):
        ed.read_event_array(path)
    path = tmp_path / "nan.npy"
    cols = np.stack([events5[f].astype(float) for f in "xytp"], 1)
    cols[3, 2] = np.nan
    np.save(path, cols)
    with pytest.raises(ValueError, match=named(path, "'t' has 1 non-finite")):
        ed.read_event_array(path)
    path = tmp_path / "ambiguous.npz"
    np.savez(path, a=np.zeros((2, 4)), b=np.zeros((2, 4)))
    with pytest.raises(ValueError, match=named(path, "expected arrays named x, y, t, p")):
        ed.read_event_array(path)


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_truncated_and_garbage_files(tmp_path, events5, suffix):
    whole = tmp_path / f"whole{suffix}"
    (np.save if suffix == ".npy" else np.savez)(whole, events5)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[:-7])
    with pytest.raises(ValueError, match=named(cut, "cannot read the file")):
        ed.read_event_array(cut)
    garbage = tmp_path / f"garbage{suffix}"
    garbage.write_bytes(b"this is not numpy at all")
    with pytest.raises(ValueError, match=named(garbage, "cannot read the file")):
        ed.read_event_array(garbage)


def test_npy_refuses_pickles_and_other_extensions(tmp_path):
    path = tmp_path / "obj.npy"
    np.save(path, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=named(path, "pickled")):
        ed.read_event_array(path)
    with pytest.raises(ValueError, match=r"data.txt: unknown event file extension '.txt'"):
        ed.read_events(tmp_path / "data.txt")


def test_npy_sensor_size_and_empty(tmp_path, events5):
    path = tmp_path / "e.npy"
    np.save(path, events5)
    with pytest.raises(ValueError, match=named(path, "x outside the sensor's width of 5")):
        ed.read_event_array(path, sensor_size=(10, 5))
    np.save(path, events5[:0])
    with pytest.raises(ValueError, match=named(path, "no events")):
        ed.read_event_array(path)
    assert ed.read_event_array(path, allow_empty=True).size == 0


# --------------------------------------------------------------------------------------------
# binning
# --------------------------------------------------------------------------------------------


def hand_bins(events, sensor, n_bins, bin_of):
    frames = np.zeros((n_bins, *sensor, 2), np.float32)
    for i, (x, y, t, p) in enumerate(events.tolist()):
        k = bin_of(i, t)
        if 0 <= k < n_bins:
            frames[k, y, x, p] += 1
    return frames


def test_bin_by_time_bins_window_and_count(rng):
    sensor = (6, 9)
    events = random_events(rng, 400, sensor, t_max=10_000)
    t0, t1 = int(events["t"][0]), int(events["t"][-1]) + 1
    frames = ed.bin_events(events, sensor, n_time_bins=7)
    expected = hand_bins(events, sensor, 7, lambda i, t: (t - t0) * 7 // (t1 - t0))
    np.testing.assert_array_equal(frames, expected)
    assert frames.sum() == 400 and frames.dtype == np.float32

    frames = ed.bin_events(events, sensor, time_window_us=1000, t_start=0)
    n = -(-t1 // 1000)
    np.testing.assert_array_equal(frames, hand_bins(events, sensor, n, lambda i, t: t // 1000))

    frames = ed.bin_events(events, sensor, events_per_frame=64)
    assert frames.shape == (7, *sensor, 2)
    np.testing.assert_array_equal(frames, hand_bins(events, sensor, 7, lambda i, t: i // 64))
    assert frames[-1].sum() == 400 - 6 * 64


def test_fixed_frame_count_time_range_and_binarize(rng):
    sensor = (4, 4)
    events = random_events(rng, 200, sensor, t_max=5000)
    full = ed.bin_events(events, sensor, time_window_us=500, t_start=0, t_end=5000)
    assert full.shape == (10, 4, 4, 2)
    trimmed = ed.bin_events(events, sensor, time_window_us=500, t_start=0, n_frames=3)
    np.testing.assert_array_equal(trimmed, full[:3])
    padded = ed.bin_events(events, sensor, time_window_us=500, t_start=0, n_frames=13)
    np.testing.assert_array_equal(padded[:10], full)
    assert not padded[10:].any()
    late = ed.bin_events(events, sensor, n_time_bins=2, t_start=1000, t_end=3000)
    expected = hand_bins(events, sensor, 2, lambda i, t: (t - 1000) // 1000 if t >= 1000 else -1)
    np.testing.assert_array_equal(late, expected)
    binary = ed.bin_events(events, sensor, n_time_bins=2, binarize=True)
    np.testing.assert_array_equal(
        binary, np.minimum(ed.bin_events(events, sensor, n_time_bins=2), 1)
    )
    empty = ed.bin_events(events[:0], sensor, events_per_frame=3, n_frames=2)
    assert empty.shape == (2, 4, 4, 2) and not empty.any()


def test_polarity_channels_and_axes():
    events = ed.make_events([2], [1], [0], [1])
    frames = ed.bin_events(events, (3, 4), n_time_bins=1)
    assert frames.shape == (1, 3, 4, 2)
    assert frames[0, 1, 2, 1] == 1 and frames.sum() == 1  # [time, row y, column x, ON]


def brute_denoise(events, window):
    keep = []
    for x, y, t, _ in events.tolist():
        keep.append(
            any(
                max(abs(x - x2), abs(y - y2)) == 1 and t - window < t2 <= t
                for x2, y2, t2, _ in events.tolist()
            )
        )
    return events[np.array(keep, bool)]


def test_denoise_hand_case():
    events = ed.make_events(
        x=[10, 11, 12, 30, 20, 20, 20, 5],
        y=[10, 10, 11, 30, 20, 20, 20, 5],
        t=[100, 150, 180, 160, 0, 50, 100, 5000],
        p=[1, 0, 1, 1, 1, 1, 1, 0],
    )
    kept = ed.denoise_events(events, 100, (34, 34))
    # the cluster at (10..12, 10..11) after its first event; the first has no earlier neighbour;
    # (30, 30) is alone; (20, 20) is a "hot pixel" (its own events do not count); (5, 5) alone
    assert kept.tolist() == [(11, 10, 150, 0), (12, 11, 180, 1)]
    # simultaneous neighbours keep each other, whatever their order
    pair = ed.make_events([3, 4], [3, 4], [7, 7], [0, 1])
    assert ed.denoise_events(pair, 1, (8, 8)).size == 2
    assert ed.denoise_events(pair[::-1], 1, (8, 8)).size == 2
    # the window is open at its old end: t - t' must be < denoise_us
    late = ed.make_events([3, 4], [3, 3], [0, 100], [0, 1])
    assert ed.denoise_events(late, 100, (8, 8)).tolist() == []
    assert ed.denoise_events(late, 101, (8, 8)).tolist() == [(4, 3, 100, 1)]


def test_denoise_matches_brute_force(rng):
    events = random_events(rng, 300, (12, 12), t_max=20_000)
    events["t"][::7] = events["t"][1::7][: len(events["t"][::7])]  # some equal timestamps
    events = events[np.argsort(events["t"], kind="stable")]
    kept = ed.denoise_events(events, 1500, (12, 12))
    np.testing.assert_array_equal(kept, brute_denoise(events, 1500))
    assert 0 < kept.size < events.size
    frames = ed.bin_events(events, (12, 12), n_time_bins=3, denoise_us=1500)
    t0, t1 = int(events["t"][0]), int(events["t"][-1]) + 1
    np.testing.assert_array_equal(
        frames, hand_bins(kept, (12, 12), 3, lambda i, t: (t - t0) * 3 // (t1 - t0))
    )


def test_crop(rng):
    events = random_events(rng, 300, (10, 12))
    frames = ed.bin_events(events, (10, 12), n_time_bins=2, crop=(2, 3, 5, 4))
    full = ed.bin_events(events, (10, 12), n_time_bins=2)
    np.testing.assert_array_equal(frames, full[:, 2:7, 3:7])
    centre = ed.bin_events(events, (10, 12), n_time_bins=2, crop=(6, 8))
    np.testing.assert_array_equal(centre, full[:, 2:8, 2:10])
    square, size = ed.crop_events(events, 4, (10, 12))
    assert size == (4, 4) and square["x"].max() < 4 and square["y"].max() < 4
    with pytest.raises(ValueError, match="`crop` must lie inside the sensor"):
        ed.bin_events(events, (10, 12), n_time_bins=2, crop=(8, 0, 5, 4))


def test_binning_argument_errors(rng):
    events = random_events(rng, 10, (4, 4))
    with pytest.raises(ValueError, match="exactly one of.*got none"):
        ed.bin_events(events, (4, 4))
    with pytest.raises(ValueError, match="exactly one of.*n_time_bins.*time_window_us"):
        ed.bin_events(events, (4, 4), n_time_bins=2, time_window_us=5)
    with pytest.raises(ValueError, match="`n_time_bins` must be an int >= 1, got 0"):
        ed.bin_events(events, (4, 4), n_time_bins=0)
    with pytest.raises(TypeError, match="`denoise_us` must be an int >= 1, got 1.5"):
        ed.bin_events(events, (4, 4), n_time_bins=1, denoise_us=1.5)
    with pytest.raises(ValueError, match="`t_end` must be > `t_start`"):
        ed.bin_events(events, (4, 4), n_time_bins=1, t_start=5, t_end=5)
    with pytest.raises(ValueError, match="x outside the sensor's width of 3"):
        ed.bin_events(ed.make_events([3], [0], [0], [0]), (4, 3), n_time_bins=1)
    with pytest.raises(TypeError, match="structured array with fields x, y, t, p"):
        ed.bin_events(np.zeros((3, 4)), (4, 4), n_time_bins=1)
    assert ed.frames_shape((34, 34), time_window_us=10) == (None, 34, 34, 2)
    assert ed.frames_shape((34, 34), events_per_frame=5, n_frames=4, crop=32) == (4, 32, 32, 2)


# --------------------------------------------------------------------------------------------
# folders and tf.data
# --------------------------------------------------------------------------------------------


@pytest.fixture
def nmnist_folder(tmp_path):
    """A miniature N-MNIST ``Train/`` folder: classes 0, 1, 2, 10 with 3 files each."""
    rng = np.random.default_rng(7)
    root = tmp_path / "Train"
    for label in ("0", "1", "2", "10"):
        (root / label).mkdir(parents=True)
        for k in range(3):
            events = random_events(rng, 50 + 10 * k, t_max=100_000)
            events["x"][:5] = int(label) * 3  # a class-specific pixel, to check the labels
            events["y"][:5] = 0
            write_bin(root / label / f"{k:05d}.bin", events)
    (root / "1" / ".hidden.bin").write_bytes(b"\x00")
    (root / "1" / "notes.txt").write_text("ignored")
    (root / ".cache").mkdir()
    return root


def test_list_event_files(nmnist_folder):
    paths, labels, names = ed.list_event_files(nmnist_folder)
    assert names == ["0", "1", "2", "10"]
    assert labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    assert [p.split("Train/")[1] for p in paths[3:6]] == [
        "1/00000.bin",
        "1/00001.bin",
        "1/00002.bin",
    ]
    paths, labels, names = ed.list_event_files(nmnist_folder, class_names=["2", "0"])
    assert labels.tolist() == [0] * 3 + [1] * 3 and "/2/" in paths[0]
    with pytest.raises(FileNotFoundError, match=r"no class folder\(s\) \['7'\]"):
        ed.list_event_files(nmnist_folder, class_names=["7"])
    with pytest.raises(ValueError, match="no event files"):
        ed.list_event_files(nmnist_folder, extensions=(".npz",))


def _collect(ds):
    frames, labels = [], []
    for x, y in ds:
        frames.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(frames), np.concatenate(labels)


def test_event_dataset_shapes_labels_and_determinism(nmnist_folder):
    options = dict(sensor_size=SENSOR, n_time_bins=5, batch_size=4)
    ds = ed.event_dataset(nmnist_folder, seed=3, **options)
    assert ds.class_names == ["0", "1", "2", "10"]
    assert ds.element_spec[0].shape.as_list() == [None, 5, 34, 34, 2]
    frames, labels = _collect(ds)
    assert frames.shape == (12, 5, 34, 34, 2) and frames.dtype == np.float32
    assert sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    # the label matches the file: its class-specific pixel (x = 3 * class name, y = 0) is lit
    names = np.array([0, 1, 2, 10])
    lit = frames[:, :, 0, :, :].sum(axis=(1, 3))  # [sample, x]
    assert all(lit[i, 3 * names[label]] >= 5 for i, label in enumerate(labels))

    again_frames, again_labels = _collect(ed.event_dataset(nmnist_folder, seed=3, **options))
    np.testing.assert_array_equal(again_frames, frames)
    np.testing.assert_array_equal(again_labels, labels)
    other = [_collect(ed.event_dataset(nmnist_folder, seed=s, **options))[1] for s in (4, 5)]
    assert any(not np.array_equal(o, labels) for o in other)

    ordered = ed.event_dataset(nmnist_folder, shuffle=False, denoise_us=50_000, **options)
    paths, file_labels, _ = ed.list_event_files(nmnist_folder)
    frames, labels = _collect(ordered)
    np.testing.assert_array_equal(labels, file_labels)
    expected = ed.bin_events(ed.read_nmnist(paths[4]), SENSOR, n_time_bins=5, denoise_us=50_000)
    np.testing.assert_array_equal(frames[4], expected)


def test_event_dataset_cache_files_and_errors(nmnist_folder, tmp_path):
    paths, labels, _ = ed.list_event_files(nmnist_folder)
    options = dict(sensor_size=SENSOR, time_window_us=20_000, n_frames=6, crop=32, seed=1)
    ds = ed.event_dataset(paths, labels, cache=True, **options)
    epochs = [[int(y) for _, y in ds] for _ in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == sorted(labels.tolist())
    assert epochs[0] != labels.tolist()  # shuffled, also with the cache
    again = ed.event_dataset(paths, labels, cache=str(tmp_path / "frames"), **options)
    assert [[int(y) for _, y in again] for _ in range(2)] == epochs  # same seed, same epochs
    x, _ = next(iter(ds))
    assert x.shape == (6, 32, 32, 2) and ds.class_names is None

    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x01\x02\x03")
    broken = ed.event_dataset([bad], sensor_size=SENSOR, n_time_bins=2)
    with pytest.raises(tf.errors.OpError, match="bad.bin: truncated or corrupt N-MNIST"):
        list(broken)
    with pytest.raises(ValueError, match="static number of frames"):
        ed.event_dataset(paths, labels, sensor_size=SENSOR, time_window_us=1000)
    with pytest.raises(ValueError, match="`labels` must be 12 ints"):
        ed.event_dataset(paths, labels[:3], sensor_size=SENSOR, n_time_bins=2)
    with pytest.raises(ValueError, match="`labels` must be None when `source` is a folder"):
        ed.event_dataset(nmnist_folder, labels, sensor_size=SENSOR, n_time_bins=2)
    with pytest.raises(ValueError, match="`crop` must lie inside"):
        ed.event_dataset(paths, labels, sensor_size=SENSOR, n_time_bins=2, crop=40)
    with pytest.raises(TypeError, match="n_time_bin"):
        ed.event_dataset(paths, labels, sensor_size=SENSOR, n_time_bin=2)


def test_event_dataset_empty_files(tmp_path):
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    options = dict(sensor_size=SENSOR, n_time_bins=3, num_parallel_calls=None)
    with pytest.raises(tf.errors.OpError, match="empty.bin: empty N-MNIST file"):
        list(ed.event_dataset([empty], **options))
    ((frames, label),) = list(ed.event_dataset([empty], [4], allow_empty=True, **options))
    assert frames.shape == (3, 34, 34, 2) and not frames.numpy().any() and label == 4


def test_hand_built_polarities_are_mapped_or_refused_never_misplaced():
    """make_events maps -1/+1 to 0/1 and refuses other values; bin_events refuses a
    structured array whose `p` is outside {0, 1} (it indexes the polarity channel with p, so
    p = 2 would land in the next pixel's OFF channel)."""
    events = ed.make_events([1, 3], [0, 2], [0, 10], [-1, 1])
    assert events["p"].tolist() == [0, 1]
    frames = ed.bin_events(events, (4, 4), n_time_bins=1)
    assert [tuple(i) for i in np.argwhere(frames)] == [(0, 0, 1, 0), (0, 2, 3, 1)]
    with pytest.raises(ValueError, match=r"make_events: polarity 'p' must be 0/1.*\[1, 2\]"):
        ed.make_events([1, 3], [0, 2], [0, 10], [1, 2])
    raw = np.zeros(2, dtype=ed.EVENT_DTYPE)
    raw["p"] = [0, 2]
    with pytest.raises(ValueError, match=r"polarity field `p` must be 0 \(OFF\) or 1"):
        ed.bin_events(raw, (4, 4), n_time_bins=1)


def test_time_bins_exact_for_long_absolute_timestamps():
    """n_time_bins with epoch-microsecond times: t * n would overflow int64; the bins are
    still floor((t - start) * n / span)."""
    start = 1_700_000_000_000_000  # 2023 in microseconds since 1970
    rng = np.random.default_rng(0)
    t = np.sort(rng.integers(0, start, 500)) + start // 2
    events = ed.make_events(np.zeros(500, int), np.zeros(500, int), t, np.ones(500, int))
    n = 10_000
    frames = ed.bin_events(events, (1, 1), n_time_bins=n, t_start=0, t_end=2 * start)
    expected = np.zeros(n, np.int64)
    for value in t:  # Python ints: exact
        expected[int(value) * n // (2 * start)] += 1
    np.testing.assert_array_equal(frames[:, 0, 0, 1], expected)


@pytest.mark.parametrize(
    "options, argument",
    [
        ({"n_time_bins": 10**12}, "n_time_bins"),
        ({"time_window_us": 1, "t_start": 0, "t_end": 10**13}, "time_window_us"),
        ({"n_time_bins": 2, "n_frames": 10**12}, "n_frames"),
    ],
)
def test_huge_frame_counts_raise_instead_of_allocating(options, argument):
    """A frame buffer past the package's element limit raises naming the argument (it would
    otherwise be zero-filled and take the process down)."""
    events = ed.make_events([1], [1], [5], [1])
    with pytest.raises(ValueError, match=rf"bin_events: `{argument}`=.* more than the limit"):
        ed.bin_events(events, (34, 34), **options)
