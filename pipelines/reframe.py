"""Reframing a clip to another aspect ratio so that the crop follows one person's face.

Pure numpy: face boxes over time in, a smoothed crop path and an ffmpeg ``crop`` filter
out (pipelines/clip.py runs it).

The path is planned on a fine time grid over the clip window:

1. the face centre is interpolated linearly between samples (samples come ~0.5 s apart
   and may have gaps) and held at its first/last value before/after them;
2. the wanted crop position (face centred) is clamped inside the frame;
3. a dead zone keeps the camera still wherever the face stays within +-``dead_zone`` of
   the crop size for ``min_hold_s`` or more (held at the middle of that band); elsewhere
   the camera follows the face itself, so a steady move is followed without the lag a
   trailing dead-zone camera would add;
4. a zero-phase Gaussian smoothing removes what jitter is left;
5. the path is resampled to one breakpoint per ``knot_s`` and simplified
   (Douglas-Peucker, ``tolerance_px``) so straight or still stretches cost nothing.

ffmpeg encoding: ``crop`` evaluates its x/y expressions for every frame (w/h once), with
``t`` the frame's time in seconds. The path goes in as a sum of ramps,
``x0 + s1*clip(t-T1,0,D1) + s2*clip(t-T2,0,D2) + ...``: one term per moving segment,
exactly piecewise linear and held at both ends, unlike nested ``if(lt(t,T),..)`` chains.
ffmpeg refuses expressions nested ~100 deep and a long ``a+b+c..`` nests one level per
term, so terms are added in parenthesised groups of 16 (see _sum). Measured: a path that
moves at every 0.5 s breakpoint is ~3.1 kB for 60 s and ~32 kB for 10 min, below the
128 kB one Linux command-line argument may hold, and ffmpeg crops where ``CropPath.at``
says (tests/test_reframe.py). ``sendcmd`` was not used: it steps between values rather
than interpolating, and needs a side file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ASPECTS: dict[str, tuple[int, int] | None] = {"9:16": (9, 16), "1:1": (1, 1), "source": None}

# Terms per parenthesised group in a path expression (see _sum).
SUM_CHUNK = 16

# A face sample: (timestamp_s, x1, y1, x2, y2) in source pixels, source timeline. Pixels of
# the upright picture (a rotation flag applied, pipelines/rotation.py), as decode gives them
# and as ffmpeg crops them.
FaceSample = tuple[float, float, float, float, float]


def crop_size(source_w: int, source_h: int, aspect: str) -> tuple[int, int]:
    """The largest crop of ``aspect`` that fits the source, both sides even (libx264 with
    yuv420p needs even dimensions). "source" keeps the whole frame (less an odd pixel)."""
    if aspect not in ASPECTS:
        raise ValueError(f"aspect must be one of {sorted(ASPECTS)}, got {aspect!r}")
    if source_w < 2 or source_h < 2:
        raise ValueError(f"source too small: {source_w}x{source_h}")
    ratio = ASPECTS[aspect]
    if ratio is None:
        return source_w // 2 * 2, source_h // 2 * 2
    aw, ah = ratio
    if source_w * ah >= source_h * aw:  # source wider than the target: full height
        h = source_h // 2 * 2
        w = h * aw // ah // 2 * 2
    else:  # source narrower: full width
        w = source_w // 2 * 2
        h = w * ah // aw // 2 * 2
    return w, h


@dataclass(frozen=True)
class CropPath:
    """A ``width`` x ``height`` crop whose top-left corner moves piecewise linearly through
    (``times[i]``, ``xs[i]``, ``ys[i]``), held before the first and after the last knot.
    Times are in the source timeline (the same as the face samples)."""

    source_size: tuple[int, int]
    width: int
    height: int
    times: np.ndarray  # (K,) seconds, increasing
    xs: np.ndarray  # (K,) crop left, source pixels
    ys: np.ndarray  # (K,) crop top, source pixels

    def at(self, t: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Crop top-left (x, y) at source time(s) ``t``."""
        t = np.asarray(t, dtype=np.float64)
        return np.interp(t, self.times, self.xs), np.interp(t, self.times, self.ys)

    def ffmpeg_filter(self, offset_s: float = 0.0) -> str:
        """The ``crop`` filter for an output whose t=0 is source time ``offset_s``.

        Quoted for a filtergraph argument (passed as one argv element, no shell)."""
        times = self.times - offset_s
        x = piecewise_linear_expr(times, self.xs)
        y = piecewise_linear_expr(times, self.ys)
        return f"crop={self.width}:{self.height}:x='{x}':y='{y}'"

    def static_filter(self, at_s: float) -> str:
        """The crop at one instant as fixed numbers (for the poster frame)."""
        x, y = self.at(at_s)
        return f"crop={self.width}:{self.height}:{round(float(x))}:{round(float(y))}"


def _num(value: float, decimals: int) -> str:
    """Shortest fixed-point text of ``value`` (no exponent: ffmpeg would read 1e-05 fine,
    but fixed point keeps the expression readable in logs)."""
    text = f"{value:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def piecewise_linear_expr(times: np.ndarray, values: np.ndarray, var: str = "t") -> str:
    """An ffmpeg expression in ``var`` through (times[i], values[i]), held outside them."""
    times, values = np.asarray(times, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if times.shape != values.shape or times.ndim != 1 or len(times) == 0:
        raise ValueError("times and values must be equal-length, non-empty 1-D arrays")
    terms = []
    for t0, t1, v0, v1 in zip(times[:-1], times[1:], values[:-1], values[1:], strict=True):
        dt, dv = t1 - t0, v1 - v0
        if dt <= 0 or abs(dv) < 0.01:  # a still segment adds nothing
            continue
        # clip(t - T, 0, D) ramps from 0 to D over the segment: times the slope gives dv.
        shift = f"{var}-{_num(t0, 4)}" if t0 >= 0 else f"{var}+{_num(-t0, 4)}"
        terms.append(f"{_num(dv / dt, 4)}*clip({shift},0,{_num(dt, 4)})")
    return _sum([_num(values[0], 2), *terms])


def _sum(terms: list[str]) -> str:
    """``terms`` added up, grouped in parenthesised chunks of SUM_CHUNK. ffmpeg rejects an
    expression whose tree is deeper than ~100 levels, and a flat ``a+b+c...`` nests one
    level per term (tested: 98 ``clip`` terms parse, 99 fail); chunking keeps the depth
    logarithmic."""
    while len(terms) > SUM_CHUNK:
        terms = [f"({_join(terms[i : i + SUM_CHUNK])})" for i in range(0, len(terms), SUM_CHUNK)]
    return _join(terms)


def _join(terms: list[str]) -> str:
    return "".join(t if i == 0 or t.startswith("-") else "+" + t for i, t in enumerate(terms))


def _simplify(times: np.ndarray, points: np.ndarray, tolerance: float) -> np.ndarray:
    """Indices kept by Douglas-Peucker: every point of ``points`` (N, D) is within
    ``tolerance`` (per coordinate) of the linear interpolation between kept neighbours."""
    keep = np.zeros(len(times), dtype=bool)
    keep[[0, -1]] = True
    stack = [(0, len(times) - 1)]
    while stack:
        lo, hi = stack.pop()
        if hi - lo < 2:
            continue
        span = times[lo + 1 : hi]
        frac = ((span - times[lo]) / (times[hi] - times[lo]))[:, None]
        line = points[lo] + frac * (points[hi] - points[lo])
        err = np.abs(points[lo + 1 : hi] - line).max(axis=1)
        worst = int(np.argmax(err))
        if err[worst] > tolerance:
            mid = lo + 1 + worst
            keep[mid] = True
            stack += [(lo, mid), (mid, hi)]
    return np.flatnonzero(keep)


def _dead_zone(target: np.ndarray, zone: float, min_hold_steps: int) -> np.ndarray:
    """Hold the camera while the target stays within a band of +-``zone`` for at least
    ``min_hold_steps``; elsewhere (a real move) follow the target. A hold sits in the middle
    of the band, so a still face ends up centred (or the crop pinned to a frame edge)
    rather than left wherever a lagging camera stopped."""
    out = target.copy()
    if zone <= 0:
        return out
    i, n = 0, len(target)
    while i < n:
        lo = hi = target[i]
        j = i + 1
        while j < n and max(hi, target[j]) - min(lo, target[j]) <= 2 * zone:
            lo, hi = min(lo, target[j]), max(hi, target[j])
            j += 1
        if j - i >= min_hold_steps:
            out[i:j] = (lo + hi) / 2
            i = j
        else:  # moving: keep following, look for a hold from the next step
            i += 1
    return out


def _gaussian_smooth(values: np.ndarray, sigma_steps: float) -> np.ndarray:
    """Zero-phase Gaussian smoothing. The ends are padded by odd reflection (as filtfilt
    does) so a steady motion stays straight up to the edges instead of easing out."""
    if sigma_steps <= 0 or len(values) < 3:
        return values.copy()
    radius = math.ceil(3 * sigma_steps)
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma_steps) ** 2)
    kernel /= kernel.sum()
    pad = min(radius, len(values) - 1)
    head = 2 * values[0] - values[pad:0:-1]
    tail = 2 * values[-1] - values[-2 : -pad - 2 : -1]
    # Beyond a short series the padding is held flat.
    padded = np.concatenate([np.full(radius - pad, head[0]), head, values, tail, np.full(radius - pad, tail[-1])])
    return np.convolve(padded, kernel, mode="valid")


def _follow_axis(
    centre: np.ndarray, crop: int, frame: int, dead_zone: float, hold_steps: int, sigma_steps: float
) -> np.ndarray:
    """Crop offsets along one axis that keep ``centre`` in the middle of the crop."""
    room = frame - crop
    if room <= 0:
        return np.zeros_like(centre)
    target = np.clip(centre - crop / 2, 0, room)
    path = _gaussian_smooth(_dead_zone(target, dead_zone * crop, hold_steps), sigma_steps)
    return np.clip(path, 0, room)


def plan_crop_path(
    faces: Sequence[FaceSample] | np.ndarray,
    source_size: tuple[int, int],
    aspect: str,
    start_s: float,
    end_s: float,
    *,
    dead_zone: float = 0.05,
    min_hold_s: float = 1.0,
    smoothing_s: float = 0.5,
    knot_s: float = 0.5,
    tolerance_px: float = 1.0,
    grid_s: float = 0.05,
) -> CropPath:
    """A crop of ``aspect`` over ``[start_s, end_s]`` that follows the face samples.

    ``faces``: (timestamp_s, x1, y1, x2, y2) rows in source pixels and timeline, any
    order; rows with non-finite values are ignored. With no usable sample the crop stays
    centred. ``dead_zone``: the crop stays still while the face keeps within +- this
    fraction of the crop size for ``min_hold_s`` or longer; ``smoothing_s``: Gaussian
    sigma in seconds; ``knot_s``: breakpoint spacing of the ffmpeg path;
    ``tolerance_px``: how far simplification may stray from it.
    """
    w, h = (int(v) for v in source_size)
    cw, ch = crop_size(w, h, aspect)
    if not (math.isfinite(start_s) and math.isfinite(end_s)) or end_s <= start_s:
        raise ValueError(f"bad window [{start_s}, {end_s}]")
    rows = np.asarray(faces, dtype=np.float64).reshape(-1, 5)
    rows = rows[np.isfinite(rows).all(axis=1)]
    rows = rows[np.argsort(rows[:, 0], kind="stable")]

    steps = max(1, math.ceil((end_s - start_s) / grid_s))
    grid = np.linspace(start_s, end_s, steps + 1)
    if len(rows) == 0:
        cx, cy = np.full_like(grid, w / 2), np.full_like(grid, h / 2)
    else:
        # np.interp holds the first/last sample outside them: the ends stay put.
        cx = np.interp(grid, rows[:, 0], (rows[:, 1] + rows[:, 3]) / 2)
        cy = np.interp(grid, rows[:, 0], (rows[:, 2] + rows[:, 4]) / 2)
    step = grid[1] - grid[0]
    hold = max(2, round(min_hold_s / step))
    xs = _follow_axis(cx, cw, w, dead_zone, hold, smoothing_s / step)
    ys = _follow_axis(cy, ch, h, dead_zone, hold, smoothing_s / step)

    # One breakpoint per knot_s (window ends included), then drop the redundant ones.
    n_knots = max(1, math.ceil((end_s - start_s) / knot_s))
    knots = np.linspace(start_s, end_s, n_knots + 1)
    kx, ky = np.interp(knots, grid, xs), np.interp(knots, grid, ys)
    keep = _simplify(knots, np.stack([kx, ky], axis=1), tolerance_px)
    if np.ptp(kx[keep]) < tolerance_px and np.ptp(ky[keep]) < tolerance_px:
        keep = keep[:1]  # a still crop: a single knot, constant expressions
    return CropPath((w, h), cw, ch, knots[keep], kx[keep], ky[keep])
