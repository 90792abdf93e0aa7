"""Event-camera data: readers, binning into frames, and a ``tf.data`` pipeline.

An event camera (DVS, ATIS) reports per-pixel brightness changes as events
``(x, y, t, p)``: column ``x`` and row ``y`` in pixels, time ``t`` in microseconds, polarity
``p`` (1 = ON, brightness went up; 0 = OFF). Here events are NumPy structured arrays of
:data:`EVENT_DTYPE`, sorted by ``t``.

* Readers: :func:`read_nmnist` (the 5-byte ``.bin`` format of N-MNIST and N-Caltech101),
  :func:`read_event_array` (``.npy`` / ``.npz`` files of your own recordings) and
  :func:`read_events`, which picks one by the file's extension. A damaged file raises a
  ``ValueError`` naming the file and the problem.
* :func:`bin_events`: events to frames ``[time, H, W, 2]`` of event counts (channel 0 = OFF,
  1 = ON), by number of time bins, fixed time window or fixed event count, with optional
  denoising and cropping, and a fixed number of frames so batches have a static shape.
* :func:`list_event_files` (a folder with one subfolder per class, as N-MNIST's
  ``Train/0/*.bin`` ... ``Train/9/*.bin``) and :func:`event_dataset`, a seeded, deterministic
  ``tf.data`` pipeline of ``(frames, label)``.

Nothing here downloads anything: the data come from the user's own folder
(see ``docs/event-data.md`` for where to get N-MNIST).

Longer than 600 lines because the readers, the binning and the pipeline share their
argument checks and their documented formats, and are read together.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from keras_spiking import _validation

__all__ = [
    "EVENT_DTYPE",
    "NMNIST_SENSOR_SIZE",
    "EVENT_FILE_EXTENSIONS",
    "make_events",
    "read_nmnist",
    "read_event_array",
    "read_events",
    "denoise_events",
    "crop_events",
    "bin_events",
    "frames_shape",
    "list_event_files",
    "event_dataset",
]

#: The structured dtype of an event array: pixel column ``x`` and row ``y``, time ``t`` in
#: microseconds, polarity ``p`` (0 = OFF, 1 = ON).
EVENT_DTYPE = np.dtype([("x", "<u2"), ("y", "<u2"), ("t", "<i8"), ("p", "i1")])

#: Sensor size ``(height, width)`` of N-MNIST (the 34 x 34 pixels its digits moved across).
NMNIST_SENSOR_SIZE: tuple[int, int] = (34, 34)

#: File extensions the readers accept: N-MNIST ``.bin`` and NumPy ``.npy`` / ``.npz``.
EVENT_FILE_EXTENSIONS: tuple[str, ...] = (".bin", ".npy", ".npz")

_NMNIST_EVENT_BYTES = 5
_MAX_COORD = np.iinfo(np.uint16).max
_CACHED_SHUFFLE_BUFFER = 1024


# --------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------


def _check_int(value: Any, name: str, *, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_sensor_size(sensor_size: Any, name: str = "sensor_size") -> tuple[int, int]:
    if not isinstance(sensor_size, (tuple, list)) or len(sensor_size) != 2:
        raise TypeError(f"`{name}` must be a pair (height, width) of ints, got {sensor_size!r}")
    height, width = (_check_int(v, name, minimum=1) for v in sensor_size)
    if max(height, width) > _MAX_COORD + 1:
        raise ValueError(
            f"`{name}` must be at most {_MAX_COORD + 1} pixels per side, got {sensor_size!r}"
        )
    return height, width


def _check_crop(crop: Any, sensor_size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """``crop`` as a box ``(y0, x0, h, w)`` inside the sensor (or None)."""
    if crop is None:
        return None
    height, width = sensor_size
    if isinstance(crop, (int, np.integer)) and not isinstance(crop, (bool, np.bool_)):
        crop = (int(crop), int(crop))
    if not isinstance(crop, (tuple, list)) or len(crop) not in (2, 4):
        raise TypeError(
            "`crop` must be an int (centre square), a pair (h, w) (centre crop) or a box "
            f"(y0, x0, h, w), got {crop!r}"
        )
    if len(crop) == 2:
        h, w = (_check_int(v, "crop", minimum=1) for v in crop)
        y0, x0 = (height - h) // 2, (width - w) // 2
    else:
        y0, x0 = (_check_int(v, "crop", minimum=0) for v in crop[:2])
        h, w = (_check_int(v, "crop", minimum=1) for v in crop[2:])
    if y0 < 0 or x0 < 0 or y0 + h > height or x0 + w > width:
        raise ValueError(
            f"`crop` must lie inside the sensor of {height} x {width} pixels (height x width), "
            f"got the box (y0, x0, h, w) = {(y0, x0, h, w)} from crop={crop!r}"
        )
    return y0, x0, h, w


def _polarities(p: np.ndarray, where: str) -> np.ndarray:
    """Polarities as 0 (OFF) / 1 (ON): 0/1 kept, -1/+1 mapped, anything else refused.

    The binning indexes the polarity channel with ``p`` itself: a value outside {0, 1} would
    land in a neighbouring pixel's channel.
    """
    values = set(np.unique(p).tolist())
    if values <= {0, 1}:
        return p
    if values <= {-1, 1}:
        return (p > 0).astype(np.int8)  # -1 / +1 polarities: -1 is OFF
    raise ValueError(
        f"{where}: polarity 'p' must be 0/1 (OFF/ON) or -1/1, got the values {sorted(values)[:8]}"
    )


def _check_events(events: Any, name: str = "events") -> np.ndarray:
    names = getattr(getattr(events, "dtype", None), "names", None) or ()
    missing = [f for f in ("x", "y", "t", "p") if f not in names]
    if missing:
        raise TypeError(
            f"`{name}` must be a structured array with fields x, y, t, p (see EVENT_DTYPE and "
            f"make_events), got {type(events).__name__} lacking {missing}"
        )
    if events.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D, got shape {events.shape}")
    bad = set(np.unique(events["p"]).tolist()) - {0, 1}
    if bad:
        raise ValueError(
            f"`{name}`: polarity field `p` must be 0 (OFF) or 1 (ON), got also the values "
            f"{sorted(bad)[:8]} (make_events maps -1/+1 to 0/1)"
        )
    return events


def _check_in_sensor(events: np.ndarray, sensor_size: tuple[int, int], where: str) -> None:
    height, width = sensor_size
    for axis, size, side in (("x", width, "width"), ("y", height, "height")):
        bad = np.flatnonzero(events[axis].astype(np.int64) >= size)
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"{where}: {bad.size} event(s) with {axis} outside the sensor's {side} of "
                f"{size} pixels (first: event {i} with {axis}={int(events[axis][i])}); "
                f"check `sensor_size` (height, width) = {sensor_size}"
            )


def _sort_by_time(events: np.ndarray, sort: bool, where: str) -> np.ndarray:
    t = events["t"]
    if t.size and not np.all(t[1:] >= t[:-1]):
        if not sort:
            i = int(np.flatnonzero(t[1:] < t[:-1])[0])
            raise ValueError(
                f"{where}: timestamps decrease at event {i + 1} (t={int(t[i + 1])} us after "
                f"t={int(t[i])} us); pass sort=True to sort them"
            )
        events = events[np.argsort(t, kind="stable")]
    return events


def make_events(x: Any, y: Any, t: Any, p: Any) -> np.ndarray:
    """An event array of :data:`EVENT_DTYPE` from four equal-length sequences (not sorted).

    Args:
        x: pixel columns, ints >= 0.
        y: pixel rows, ints >= 0.
        t: times in microseconds, ints.
        p: polarities, 0 (OFF) or 1 (ON); -1/+1 are mapped to 0/1.

    Returns:
        A structured array of :data:`EVENT_DTYPE`, in the given order.

    Raises:
        ValueError: polarities other than 0/1 or -1/+1 (naming the values).
    """
    columns = [np.asarray(v).reshape(-1) for v in (x, y, t, p)]
    if len({c.size for c in columns}) != 1:
        raise ValueError(
            f"`x`, `y`, `t` and `p` must have the same length, got {[c.size for c in columns]}"
        )
    columns[3] = _polarities(columns[3], "make_events")
    events = np.empty(columns[0].size, dtype=EVENT_DTYPE)
    for field, column in zip("xytp", columns):
        events[field] = column
    return events


# --------------------------------------------------------------------------------------------
# readers
# --------------------------------------------------------------------------------------------


def read_nmnist(
    path: str | os.PathLike,
    *,
    sensor_size: Sequence[int] = NMNIST_SENSOR_SIZE,
    sort: bool = True,
    allow_empty: bool = False,
) -> np.ndarray:
    """Read one N-MNIST (or N-Caltech101) ``.bin`` file of events.

    The format (Orchard et al. 2015; the authors' Matlab reader ``Read_Ndataset.m``, and the
    readers of Tonic and others, decode it the same way) is a bare stream of 40-bit events,
    5 bytes each, no header:

    ====== ========= ===========================================================
    byte   bits      meaning
    ====== ========= ===========================================================
    0      39 - 32   x address, pixels (0-based)
    1      31 - 24   y address, pixels (0-based)
    2      23        polarity: 0 = OFF, 1 = ON
    2 - 4  22 - 0    timestamp, microseconds, big-endian (so at most 2**23 - 1)
    ====== ========= ===========================================================

    Args:
        path: the ``.bin`` file.
        sensor_size: ``(height, width)``; every event must lie inside it (N-MNIST: 34 x 34,
            see :data:`NMNIST_SENSOR_SIZE`).
        sort: stable-sort the events by time (N-MNIST files are already in time order, so
            this changes nothing there); with ``False``, decreasing timestamps are an error.
        allow_empty: return an empty array for an empty file instead of raising.

    Returns:
        The events, a structured array of :data:`EVENT_DTYPE` sorted by ``t``.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: naming the file, for an empty file (unless ``allow_empty``), a size that
            is not a multiple of 5 bytes (a truncated file), or events outside the sensor.
    """
    path = Path(path)
    sensor_size = _check_sensor_size(tuple(sensor_size))
    if not path.is_file():
        raise FileNotFoundError(f"N-MNIST event file not found: {path}")
    data = np.fromfile(path, dtype=np.uint8)
    if data.size % _NMNIST_EVENT_BYTES:
        raise ValueError(
            f"{path}: truncated or corrupt N-MNIST file, its {data.size} bytes are not a "
            f"multiple of the {_NMNIST_EVENT_BYTES}-byte event ({data.size // 5} whole events "
            f"and {data.size % 5} byte(s) left over)"
        )
    if data.size == 0 and not allow_empty:
        raise ValueError(
            f"{path}: empty N-MNIST file (0 events); pass allow_empty=True to accept it"
        )
    raw = data.reshape(-1, _NMNIST_EVENT_BYTES).astype(np.int64)
    events = np.empty(len(raw), dtype=EVENT_DTYPE)
    events["x"] = raw[:, 0]
    events["y"] = raw[:, 1]
    events["p"] = raw[:, 2] >> 7
    events["t"] = ((raw[:, 2] & 0x7F) << 16) | (raw[:, 3] << 8) | raw[:, 4]
    _check_in_sensor(events, sensor_size, str(path))
    return _sort_by_time(events, sort, str(path))


def _columns_from_array(arr: np.ndarray, where: str) -> dict[str, np.ndarray]:
    if arr.dtype.names:
        missing = [f for f in ("x", "y", "t", "p") if f not in arr.dtype.names]
        if missing:
            raise ValueError(
                f"{where}: structured array lacks the field(s) {missing}; expected fields x, "
                f"y, t, p (it has {list(arr.dtype.names)})"
            )
        if arr.ndim != 1:
            raise ValueError(f"{where}: structured event array must be 1-D, got {arr.shape}")
        return {f: arr[f] for f in "xytp"}
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(
            f"{where}: expected a structured array with fields x, y, t, p or an [n, 4] array "
            f"with columns x, y, t, p, got an array of shape {arr.shape}"
        )
    return {f: arr[:, i] for i, f in enumerate("xytp")}


def _columns_from_npz(npz: Any, where: str) -> dict[str, np.ndarray]:
    keys = list(npz.keys())
    if all(f in keys for f in "xytp"):
        return {f: npz[f] for f in "xytp"}
    if len(keys) == 1 or "events" in keys:
        key = "events" if "events" in keys else keys[0]
        return _columns_from_array(npz[key], f"{where}[{key!r}]")
    raise ValueError(
        f"{where}: expected arrays named x, y, t, p, one array named 'events', or a single "
        f"array; the file has {keys}"
    )


def _validate_columns(
    cols: dict[str, np.ndarray], where: str, sensor_size: tuple[int, int] | None
) -> np.ndarray:
    for field, column in cols.items():
        if column.ndim != 1:
            raise ValueError(f"{where}: field {field!r} must be 1-D, got shape {column.shape}")
        if column.dtype.kind not in "biuf":
            raise ValueError(
                f"{where}: field {field!r} must hold numbers, got dtype {column.dtype}"
            )
    sizes = {f: c.size for f, c in cols.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"{where}: fields x, y, t, p differ in length: {sizes}")
    out = {}
    for field, column in cols.items():
        if column.dtype.kind == "f":
            bad = ~np.isfinite(column)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"{where}: field {field!r} has {int(bad.sum())} non-finite value(s) "
                    f"(first: event {i}, {field}={column[i]!r})"
                )
            if np.any(column != np.round(column)):
                hint = " (timestamps are whole microseconds; seconds? multiply by 1e6)"
                raise ValueError(
                    f"{where}: field {field!r} has fractional values"
                    + (hint if field == "t" else "")
                )
            if np.any(np.abs(column) >= 2.0**63):
                raise ValueError(f"{where}: field {field!r} has values beyond int64")
        out[field] = column.astype(np.int64)
    for field in "xy":
        if out[field].size and (out[field].min() < 0 or out[field].max() > _MAX_COORD):
            i = int(np.flatnonzero((out[field] < 0) | (out[field] > _MAX_COORD))[0])
            raise ValueError(
                f"{where}: field {field!r} must hold pixel coordinates in [0, {_MAX_COORD}], "
                f"got {field}={int(out[field][i])} at event {i}"
            )
    p = _polarities(out["p"], where)
    events = make_events(out["x"], out["y"], out["t"], p)
    if sensor_size is not None:
        _check_in_sensor(events, sensor_size, where)
    return events


def read_event_array(
    path: str | os.PathLike,
    *,
    sensor_size: Sequence[int] | None = None,
    sort: bool = True,
    allow_empty: bool = False,
) -> np.ndarray:
    """Read DVS-style events ``(x, y, t, p)`` from a NumPy ``.npy`` or ``.npz`` file.

    Accepted layouts:

    * ``.npy``: a structured array with fields ``x``, ``y``, ``t``, ``p`` (others are
      ignored), or a numeric ``[n, 4]`` array whose columns are ``x, y, t, p``;
    * ``.npz``: arrays named ``x``, ``y``, ``t``, ``p``; or one array named ``events`` (or the
      only array) in one of the ``.npy`` layouts.

    Units and values: ``x`` (column) and ``y`` (row) are pixel coordinates in
    ``[0, 65535]``; ``t`` is in whole microseconds (float values are accepted when they are
    whole numbers); ``p`` is 0/1 (OFF/ON), ``-1``/``1`` (mapped to 0/1) or bool. Pickled
    (object) arrays are refused, for safety.

    Args:
        path: the ``.npy`` or ``.npz`` file.
        sensor_size: ``(height, width)``; if given, every event must lie inside it.
        sort: stable-sort the events by time (events with equal times keep the file's
            order); with ``False``, decreasing timestamps are an error.
        allow_empty: return an empty array for a file without events instead of raising.

    Returns:
        The events, a structured array of :data:`EVENT_DTYPE` sorted by ``t``.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: naming the file and the problem: an unreadable or truncated file, missing
            fields, non-numeric or non-finite values, fractional coordinates or timestamps,
            negative coordinates, bad polarities, events outside ``sensor_size``, no events.
    """
    path = Path(path)
    if sensor_size is not None:
        sensor_size = _check_sensor_size(tuple(sensor_size))
    if not path.is_file():
        raise FileNotFoundError(f"event file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise ValueError(f"{path}: expected a .npy or .npz file, got the extension {suffix!r}")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                cols = _columns_from_npz(loaded, str(path))
        elif isinstance(loaded, np.ndarray):
            cols = _columns_from_array(loaded, str(path))
        else:
            raise ValueError(f"{path}: not a NumPy array file")
    except ValueError as err:
        if str(err).startswith(str(path)):
            raise
        raise ValueError(
            f"{path}: cannot read the file as a NumPy array (corrupt, truncated or pickled): {err}"
        ) from err
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise ValueError(
            f"{path}: cannot read the file, it is corrupt or truncated "
            f"({type(err).__name__}: {err})"
        ) from err
    events = _validate_columns(cols, str(path), sensor_size)
    if events.size == 0 and not allow_empty:
        raise ValueError(f"{path}: no events in the file; pass allow_empty=True to accept it")
    return _sort_by_time(events, sort, str(path))


def read_events(path: str | os.PathLike, **kwargs: Any) -> np.ndarray:
    """Read an event file, choosing the reader by extension.

    ``.bin`` goes to :func:`read_nmnist`, ``.npy`` / ``.npz`` to :func:`read_event_array`.

    Args:
        path: the file.
        **kwargs: ``sensor_size``, ``sort``, ``allow_empty``, passed to the reader.

    Returns:
        The events, a structured array of :data:`EVENT_DTYPE` sorted by ``t``.

    Raises:
        ValueError: for an unknown extension, or what the reader raises.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".bin":
        return read_nmnist(path, **kwargs)
    if suffix in (".npy", ".npz"):
        return read_event_array(path, **kwargs)
    raise ValueError(
        f"{path}: unknown event file extension {suffix!r}, expected one of {EVENT_FILE_EXTENSIONS}"
    )


# --------------------------------------------------------------------------------------------
# filtering and binning
# --------------------------------------------------------------------------------------------


def denoise_events(events: np.ndarray, denoise_us: int, sensor_size: Sequence[int]) -> np.ndarray:
    """Remove isolated events (the background-activity filter).

    An event at pixel ``(x, y)`` and time ``t`` is kept if at least one of its 8 neighbouring
    pixels (the 3 x 3 neighbourhood without the pixel itself) has an event at a time ``t'``
    with ``t - denoise_us < t' <= t``; otherwise it is dropped as noise. Its own pixel does
    not count, so a "hot" pixel firing on its own is removed too. This is the classic filter
    of Delbruck's jAER and of Orchard's ``FilterTD.m``; Tonic's ``Denoise`` uses the 4
    direct neighbours instead, and processes events one by one so that of two simultaneous
    events only the later one sees the other. Here simultaneous events see each other and
    the result does not depend on the order of the input.

    Args:
        events: structured array with fields x, y, t, p (any order).
        denoise_us: the time window, microseconds, an int >= 1.
        sensor_size: ``(height, width)`` of the sensor.

    Returns:
        The kept events, in their input order.
    """
    events = _check_events(events)
    denoise_us = _check_int(denoise_us, "denoise_us", minimum=1)
    height, width = _check_sensor_size(tuple(sensor_size))
    _check_in_sensor(events, (height, width), "`events`")
    if events.size == 0:
        return events
    x = events["x"].astype(np.int64)
    y = events["y"].astype(np.int64)
    t = events["t"].astype(np.int64)
    # Sort by (pixel, time) through one int64 key with times replaced by their rank (so the
    # key cannot overflow); then "the latest event at pixel q at or before t" is a search.
    _, t_rank = np.unique(t, return_inverse=True)
    n_ranks = int(t_rank.max()) + 1
    pixel = y * width + x
    key = pixel * n_ranks + t_rank
    order = np.argsort(key, kind="stable")
    key_sorted, pixel_sorted, t_sorted = key[order], pixel[order], t[order]
    keep = np.zeros(events.size, dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dx == 0 and dy == 0:
                continue
            ny, nx = y + dy, x + dx
            inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
            neighbour = ny * width + nx
            found = np.searchsorted(key_sorted, neighbour * n_ranks + t_rank, side="right") - 1
            j = np.maximum(found, 0)
            keep |= (
                inside
                & (found >= 0)
                & (pixel_sorted[j] == neighbour)
                & (t - t_sorted[j] < denoise_us)
            )
    return events[keep]


def crop_events(
    events: np.ndarray, crop: Any, sensor_size: Sequence[int]
) -> tuple[np.ndarray, tuple[int, int]]:
    """Keep the events inside a crop box and shift them to its origin.

    Args:
        events: structured array with fields x, y, t, p.
        crop: an int ``s`` (centre ``s x s`` square), a pair ``(h, w)`` (centre crop; the
            offset rounds down) or a box ``(y0, x0, h, w)`` (rows ``y0 .. y0 + h - 1``,
            columns ``x0 .. x0 + w - 1``).
        sensor_size: ``(height, width)`` of the sensor.

    Returns:
        ``(events, (h, w))``: the events inside, with ``x - x0`` and ``y - y0``, and the new
        sensor size.
    """
    events = _check_events(events)
    sensor_size = _check_sensor_size(tuple(sensor_size))
    y0, x0, h, w = _check_crop(crop, sensor_size)
    x = events["x"].astype(np.int64)
    y = events["y"].astype(np.int64)
    inside = (x >= x0) & (x < x0 + w) & (y >= y0) & (y < y0 + h)
    out = events[inside].copy()
    out["x"] -= x0
    out["y"] -= y0
    return out, (h, w)


def _binning_mode(n_time_bins: Any, time_window_us: Any, events_per_frame: Any) -> tuple[str, int]:
    given = {
        name: value
        for name, value in (
            ("n_time_bins", n_time_bins),
            ("time_window_us", time_window_us),
            ("events_per_frame", events_per_frame),
        )
        if value is not None
    }
    if len(given) != 1:
        raise ValueError(
            "give exactly one of `n_time_bins`, `time_window_us` and `events_per_frame`, "
            f"got {given or 'none'}"
        )
    ((name, value),) = given.items()
    return name, _check_int(value, name, minimum=1)


def frames_shape(
    sensor_size: Sequence[int],
    *,
    n_time_bins: int | None = None,
    time_window_us: int | None = None,
    events_per_frame: int | None = None,
    n_frames: int | None = None,
    crop: Any = None,
    **_: Any,
) -> tuple[int | None, int, int, int]:
    """The shape ``[time, H, W, 2]`` that :func:`bin_events` returns for these options.

    ``time`` is ``n_time_bins`` or ``n_frames``, else None (it depends on the events).
    Other keywords of :func:`bin_events` are accepted and ignored.

    Args:
        sensor_size: ``(height, width)`` of the sensor.
        n_time_bins: as in :func:`bin_events`.
        time_window_us: as in :func:`bin_events`.
        events_per_frame: as in :func:`bin_events`.
        n_frames: as in :func:`bin_events`.
        crop: as in :func:`bin_events`.

    Returns:
        ``(time, height, width, 2)``.
    """
    sensor_size = _check_sensor_size(tuple(sensor_size))
    mode, value = _binning_mode(n_time_bins, time_window_us, events_per_frame)
    if n_frames is not None:
        n_frames = _check_int(n_frames, "n_frames", minimum=1)
    box = _check_crop(crop, sensor_size)
    height, width = sensor_size if box is None else box[2:]
    time = n_frames if n_frames is not None else (value if mode == "n_time_bins" else None)
    return time, height, width, 2


def bin_events(
    events: np.ndarray,
    sensor_size: Sequence[int],
    *,
    n_time_bins: int | None = None,
    time_window_us: int | None = None,
    events_per_frame: int | None = None,
    n_frames: int | None = None,
    t_start: int | None = None,
    t_end: int | None = None,
    crop: Any = None,
    denoise_us: int | None = None,
    binarize: bool = False,
    dtype: Any = "float32",
) -> np.ndarray:
    """Accumulate events into frames ``[time, H, W, 2]`` of event counts.

    ``frames[k, y, x, p]`` counts the events of polarity ``p`` (channel 0 = OFF, 1 = ON) at
    row ``y`` and column ``x`` in frame ``k``. Steps, in order:

    1. **Denoise** (``denoise_us``): :func:`denoise_events` on the whole sensor.
    2. **Crop** (``crop``): :func:`crop_events`; the frames have the crop's size.
    3. **Time range**: events with ``t_start <= t < t_end`` are kept; ``t_start`` defaults
       to the first event's time and ``t_end`` to the last event's time + 1 us, both taken
       from the input events (before steps 1 and 2), so the options never shift the frames.
    4. **Binning**, exactly one of:

       * ``n_time_bins = n``: ``[t_start, t_end)`` cut into ``n`` equal bins; an event goes
         to bin ``floor((t - t_start) * n / (t_end - t_start))``;
       * ``time_window_us = w``: bin ``floor((t - t_start) / w)``, frames of ``w`` us; there
         are ``ceil((t_end - t_start) / w)`` of them;
       * ``events_per_frame = m``: consecutive runs of ``m`` events in time order (after
         steps 1 - 3); the last frame may hold fewer.

    5. **Fixed length** (``n_frames``): the frames are cut to the first ``n_frames``, or
       padded with empty frames at the end, so every sample has the same shape.

    The result depends only on the events and the options (no randomness). Events need not
    be sorted unless ``events_per_frame`` is used (then they are stable-sorted by ``t``).

    Args:
        events: structured array with fields x, y, t, p (see :data:`EVENT_DTYPE`).
        sensor_size: ``(height, width)``; every event must lie inside it.
        n_time_bins: number of equal time bins.
        time_window_us: length of a frame, microseconds.
        events_per_frame: number of events per frame.
        n_frames: fixed number of output frames (pad with empty frames or cut).
        t_start: start of the first frame, microseconds (default: the first event's time).
        t_end: end of the time range, microseconds, exclusive (default: last event + 1).
        crop: int, ``(h, w)`` (centre crop) or ``(y0, x0, h, w)``; see :func:`crop_events`.
        denoise_us: if given, drop events with no neighbour event within this many
            microseconds before them (see :func:`denoise_events`).
        binarize: clip the counts to 1 (a pixel either had events in a frame or not).
        dtype: dtype of the frames.

    Returns:
        Frames ``[time, H, W, 2]`` in ``dtype``.

    Raises:
        ValueError: for bad options, ``t_end <= t_start``, or events outside the sensor.
        TypeError: for arguments of the wrong type.
    """
    events = _check_events(events)
    shape = frames_shape(
        sensor_size,
        n_time_bins=n_time_bins,
        time_window_us=time_window_us,
        events_per_frame=events_per_frame,
        n_frames=n_frames,
        crop=crop,
    )
    sensor_size = _check_sensor_size(tuple(sensor_size))
    mode, value = _binning_mode(n_time_bins, time_window_us, events_per_frame)
    for name, bound in (("t_start", t_start), ("t_end", t_end)):
        if bound is not None and (
            isinstance(bound, (bool, np.bool_)) or not isinstance(bound, (int, np.integer))
        ):
            raise TypeError(f"`{name}` must be an int (microseconds) or None, got {bound!r}")
    if t_start is not None and t_end is not None and not t_end > t_start:
        raise ValueError(f"`t_end` must be > `t_start`, got t_start={t_start}, t_end={t_end}")
    if not isinstance(binarize, (bool, np.bool_)):
        raise TypeError(f"`binarize` must be a bool, got {binarize!r}")
    dtype = np.dtype(dtype)
    _check_in_sensor(events, sensor_size, "`events`")

    # the default time range is the recording's, before denoising and cropping remove
    # events, so that frames of one recording stay aligned in time whatever the options
    had_events = events.size > 0
    t_all = events["t"]
    start = int(t_start) if t_start is not None else (int(t_all.min()) if had_events else 0)
    end = int(t_end) if t_end is not None else (int(t_all.max()) + 1 if had_events else start + 1)
    if denoise_us is not None:
        events = denoise_events(events, denoise_us, sensor_size)
    height, width = sensor_size
    if crop is not None:
        events, (height, width) = crop_events(events, crop, sensor_size)
    if mode == "events_per_frame":
        events = _sort_by_time(events, True, "`events`")
    t = events["t"].astype(np.int64)
    in_range = (t >= start) & (t < end)
    # a default bound past the given one (e.g. t_end before the first event): no event is
    # in range, the frames are empty
    end = max(end, start + 1)
    events, t = events[in_range], t[in_range] - start

    if mode == "n_time_bins":
        # bin floor(t * n / span); in Python ints where t * n could overflow int64 (long
        # recordings with absolute timestamps)
        span = int(end - start)
        if span * value < 2**63:
            bins = t * value // span
        else:
            bins = (t.astype(object) * value // span).astype(np.int64)
        n_bins = value
    elif mode == "time_window_us":
        bins = t // value
        n_bins = -(-(end - start) // value) if (had_events or t_end is not None) else 0
    else:
        bins = np.arange(t.size, dtype=np.int64) // value
        n_bins = -(-t.size // value)
    n_out = shape[0] if shape[0] is not None else n_bins
    argument, size = ("n_frames", n_frames) if n_frames is not None else (mode, value)
    _validation.buffer_size(
        argument,
        size,
        {"time": n_out, "height": height, "width": width, "polarity": 2},
        "the frames",
        "bin_events",
    )
    keep = bins < n_out
    flat = (
        (bins[keep] * height + events["y"][keep].astype(np.int64)) * width
        + events["x"][keep].astype(np.int64)
    ) * 2 + events["p"][keep].astype(np.int64)
    counts = np.bincount(flat, minlength=n_out * height * width * 2)
    frames = counts.reshape(n_out, height, width, 2)
    if binarize:
        frames = np.minimum(frames, 1)
    return frames.astype(dtype)


# --------------------------------------------------------------------------------------------
# folders and tf.data
# --------------------------------------------------------------------------------------------


def _class_sort_key(names: list[str]) -> Any:
    if all(name.isdigit() for name in names):
        return lambda name: (int(name), name)
    return lambda name: name


def list_event_files(
    root: str | os.PathLike,
    *,
    extensions: Sequence[str] = EVENT_FILE_EXTENSIONS,
    class_names: Sequence[str] | None = None,
) -> tuple[list[str], np.ndarray, list[str]]:
    """List the event files of a folder with one subfolder per class.

    The layout of N-MNIST's ``Train/`` and ``Test/`` folders: ``root/0/00002.bin``, ...,
    ``root/9/...``. Only the files directly inside each class folder whose extension is in
    ``extensions`` count; hidden files and folders (names starting with ``.``) are ignored.
    The order is deterministic: classes sorted by name (numerically when every name is a
    number, so ``"10"`` comes after ``"9"``), files sorted by name within a class.

    Args:
        root: the folder.
        extensions: file extensions to include (case-insensitive).
        class_names: the class folders to use, in label order; default: all subfolders.

    Returns:
        ``(paths, labels, class_names)``: file paths (str), int32 labels ``[n]`` (the index
        of the class in ``class_names``), and the class names.

    Raises:
        FileNotFoundError: if ``root`` or a requested class folder does not exist.
        ValueError: if no event file is found.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"`root` is not a folder: {str(root)!r}")
    exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    if class_names is None:
        found = [d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
        class_names = sorted(found, key=_class_sort_key(found))
    else:
        class_names = [str(c) for c in class_names]
        missing = [c for c in class_names if not (root / c).is_dir()]
        if missing:
            raise FileNotFoundError(f"{root}: no class folder(s) {missing}")
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(class_names):
        files = sorted(
            f.name
            for f in (root / name).iterdir()
            if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in exts
        )
        paths += [str(root / name / f) for f in files]
        labels += [label] * len(files)
    if not paths:
        raise ValueError(
            f"{root}: no event files with extension {exts} in class subfolders "
            f"{class_names[:10]}; expected root/<class>/<file>"
        )
    return paths, np.asarray(labels, dtype=np.int32), list(class_names)


def event_dataset(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    labels: Sequence[int] | None = None,
    *,
    sensor_size: Sequence[int],
    batch_size: int | None = None,
    shuffle: bool = True,
    seed: int | None = 0,
    shuffle_buffer: int | None = None,
    num_parallel_calls: int | None = tf.data.AUTOTUNE,
    cache: bool | str = False,
    prefetch: bool = True,
    drop_remainder: bool = False,
    allow_empty: bool = False,
    **binning: Any,
) -> tf.data.Dataset:
    """A ``tf.data`` pipeline of event files binned into frames: ``(frames, label)``.

    Each element is ``frames`` ``[time, H, W, 2]`` float32 (see :func:`bin_events`) and an
    int32 ``label``; with ``batch_size``, batches ``[batch, time, H, W, 2]`` and ``[batch]``.
    The frame count must be static: give ``n_time_bins``, or ``n_frames`` with the other
    modes. Files are read with :func:`read_events` inside ``tf.numpy_function``; a bad file
    stops the iteration with an error that carries the reader's message (file and problem).

    Pipeline: files (and labels) -> shuffle -> read + bin (``num_parallel_calls``, in order)
    -> batch -> prefetch. With ``cache``, the files are put in a seeded random order once,
    the binned frames are cached, and the per-epoch shuffle moves after the cache; its
    buffer holds binned samples in memory, so it defaults to at most 1024 of them.

    Determinism: the order of the files is fixed (:func:`list_event_files`), binning has no
    randomness, parallel reads keep their order (``deterministic=True``), and the shuffle
    uses ``seed``. So the same ``seed`` gives the same elements in the same order on every
    run, a new order each epoch (``reshuffle_each_iteration``), but the same sequence of
    epochs. ``seed=None`` shuffles differently on every run. (A global seed set with
    ``tf.random.set_seed`` also enters TensorFlow's shuffle seed.)

    Args:
        source: a folder with one subfolder per class (see :func:`list_event_files`), or a
            sequence of file paths.
        labels: int labels of the files when ``source`` is a sequence (default: all 0);
            must be None for a folder.
        sensor_size: ``(height, width)`` of the sensor (N-MNIST: :data:`NMNIST_SENSOR_SIZE`).
        batch_size: batch the elements, or None for single samples.
        shuffle: shuffle the samples (every epoch).
        seed: int seed of the shuffle, or None for a different order on every run.
        shuffle_buffer: shuffle buffer size; default: the number of files (a full shuffle),
            or at most 1024 with ``cache``.
        num_parallel_calls: parallel reads (``tf.data.AUTOTUNE`` or an int; None: serial).
        cache: False, True (cache in memory) or a file name prefix (cache on disk).
        prefetch: add ``prefetch(tf.data.AUTOTUNE)`` at the end.
        drop_remainder: drop the last, smaller batch.
        allow_empty: accept files without events (all-zero frames).
        **binning: the options of :func:`bin_events` (``n_time_bins``, ``time_window_us``,
            ``events_per_frame``, ``n_frames``, ``t_start``, ``t_end``, ``crop``,
            ``denoise_us``, ``binarize``).

    Returns:
        The ``tf.data.Dataset``, with an attribute ``class_names`` (the class folder names,
        or None when ``source`` is a list of files).

    Raises:
        ValueError, TypeError: for bad arguments (checked before any file is read).
    """
    sensor_size = _check_sensor_size(tuple(sensor_size))
    if "dtype" in binning or "events" in binning:
        raise TypeError("`event_dataset` always yields float32 frames; drop `dtype`/`events`")
    bin_events(np.empty(0, EVENT_DTYPE), sensor_size, **binning)  # checks every option
    shape = frames_shape(sensor_size, **binning)
    if shape[0] is None:
        raise ValueError(
            "event_dataset needs a static number of frames: give `n_time_bins`, or `n_frames` "
            f"with `time_window_us` / `events_per_frame`; got {binning}"
        )
    if isinstance(source, (str, os.PathLike)):
        if labels is not None:
            raise ValueError(
                "`labels` must be None when `source` is a folder (they are its classes)"
            )
        paths, label_array, class_names = list_event_files(source)
    else:
        paths = [str(p) for p in source]
        if not paths:
            raise ValueError("`source` is an empty list of files")
        label_array = np.zeros(len(paths), np.int32) if labels is None else np.asarray(labels)
        if label_array.shape != (len(paths),) or label_array.dtype.kind not in "iu":
            raise ValueError(f"`labels` must be {len(paths)} ints (one per file), got {labels!r}")
        label_array = label_array.astype(np.int32)
        class_names = None
    if batch_size is not None:
        batch_size = _check_int(batch_size, "batch_size", minimum=1)
    if seed is not None:
        seed = _check_int(seed, "seed", minimum=0)
    if shuffle_buffer is not None:
        shuffle_buffer = _check_int(shuffle_buffer, "shuffle_buffer", minimum=1)
    if not (cache is False or cache is True or isinstance(cache, (str, os.PathLike))):
        raise TypeError(f"`cache` must be a bool or a file name prefix, got {cache!r}")

    def load(path: bytes) -> np.ndarray:
        events = read_events(path.decode(), sensor_size=sensor_size, allow_empty=allow_empty)
        return bin_events(events, sensor_size, **binning)

    def load_tf(path: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        frames = tf.numpy_function(load, [path], tf.float32, stateful=False)
        frames.set_shape(shape)
        return frames, label

    def shuffled(ds: tf.data.Dataset) -> tf.data.Dataset:
        if not shuffle:
            return ds
        default = min(len(paths), _CACHED_SHUFFLE_BUFFER) if cache else len(paths)
        return ds.shuffle(shuffle_buffer or default, seed=seed, reshuffle_each_iteration=True)

    if cache and shuffle:
        # the cache keeps its first order: make it a seeded permutation of the files, so the
        # smaller shuffle buffer after the cache still mixes the classes
        order = np.random.default_rng(seed).permutation(len(paths))
        paths, label_array = [paths[i] for i in order], label_array[order]
    ds = tf.data.Dataset.from_tensor_slices((paths, label_array))
    if not cache:
        ds = shuffled(ds)
    if num_parallel_calls is None:
        ds = ds.map(load_tf)
    else:
        ds = ds.map(load_tf, num_parallel_calls=num_parallel_calls, deterministic=True)
    if cache:
        ds = shuffled(ds.cache("" if cache is True else os.fspath(cache)))
    if batch_size is not None:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if prefetch:
        ds = ds.prefetch(tf.data.AUTOTUNE)
    ds.class_names = class_names
    return ds
