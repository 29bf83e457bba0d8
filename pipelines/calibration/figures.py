"""The notebooks' figures at one saved size (matplotlib, imported lazily: it is only in the
``notebooks`` extra), and the timeline rows they draw (pure)."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.calibration.rates import FAR_TARGETS, ScoreSet, operating_point, point_at, roc
from pipelines.calibration.sweeps import SegmentRule, SweepRow, grid_key
from pipelines.evaluate import Interval, LabelledSet, match_video
from pipelines.segments import RankedSegment, TimedHit

FIGURE_SIZE = (12.0, 7.0)  # inches; every saved figure has this size ...
FIGURE_DPI = 100  # ... and resolution: 1200 x 700 px
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def figure(nrows: int = 1, ncols: int = 1, **kwargs: Any):
    """A matplotlib figure at the saved size (constrained layout), and its axes."""
    import matplotlib.pyplot as plt

    kwargs.setdefault("layout", "constrained")
    return plt.subplots(nrows, ncols, figsize=FIGURE_SIZE, **kwargs)


def save_figure(
    fig, name: str, notebook: str | None = None, folder: str | os.PathLike[str] | None = None
) -> Path | None:
    """Also save ``fig`` as ``<folder>/<notebook>-<name>.png`` at FIGURE_SIZE and FIGURE_DPI.

    ``folder`` defaults to $FACEREEL_NB_FIGURES; when neither is set nothing is written (None).
    """
    folder = folder if folder is not None else os.environ.get("FACEREEL_NB_FIGURES") or None
    if folder is None:
        return None
    stem = f"{notebook}-{name}" if notebook else name
    if not _NAME.match(stem):
        raise ValueError(f"figure name {stem!r}: use letters, digits, '_', '-', '.'")
    path = Path(folder) / f"{stem}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.set_size_inches(*FIGURE_SIZE)
    fig.savefig(path, dpi=FIGURE_DPI)
    return path


def plot_histograms(ax, scores: ScoreSet, title: str, marks: Mapping[str, float] | None = None, bins: int = 40) -> None:
    """Genuine and impostor score histograms (each normalised to its own count), with
    vertical lines at ``marks`` (label -> threshold)."""
    edges = np.linspace(-0.2, 1.0, bins + 1)
    ax.hist(
        scores.impostor, edges, density=True, alpha=0.55, color="tab:red", label=f"impostor (n={scores.n_impostor})"
    )
    ax.hist(scores.genuine, edges, density=True, alpha=0.55, color="tab:green", label=f"genuine (n={scores.n_genuine})")
    for i, (label, t) in enumerate((marks or {}).items()):
        ax.axvline(t, color=f"C{i}", ls="--", lw=1.2, label=f"{label} {t:.3f}")
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=8)


def plot_roc(
    ax,
    curves: Mapping[str, ScoreSet],
    marks: Mapping[str, float] | None = None,
    targets: Sequence[float] = FAR_TARGETS,
    det: bool = False,
) -> None:
    """ROC (TAR over FAR) or DET (FRR over FAR), log FAR axis, per named score set; the FAR
    targets' operating points (hollow when the sample cannot resolve the target) and the
    ``marks`` thresholds are marked on each curve."""
    symbols = "osD^v<>"
    for c, (name, scores) in enumerate(curves.items()):
        color = f"C{c}"
        _, f, t = roc(scores)
        floor = 0.5 / max(scores.n_impostor, 1)  # FAR 0 drawn at half a count
        y = 1 - t if det else t
        ax.step(np.maximum(f, floor), y, where="post", color=color, label=name)
        if scores.n_impostor:
            ax.axvline(1 / scores.n_impostor, color=color, ls=":", lw=0.8, label=f"1/n impostors ({name})")
        for target in targets:
            p = operating_point(scores, target)
            yv = 1 - p.tar if det else p.tar
            ax.plot(max(p.far, floor), yv, "o", ms=7, color=color, mfc=color if p.resolvable else "none")
            ax.annotate(
                f"{target:.0e}", (max(p.far, floor), yv), textcoords="offset points", xytext=(4, -10), fontsize=7
            )
        for i, (label, thr) in enumerate((marks or {}).items()):
            p = point_at(scores, thr)
            ax.plot(
                max(p.far, floor),
                1 - p.tar if det else p.tar,
                symbols[(i + 1) % len(symbols)],
                ms=9,
                color=color,
                mec="black",
                label=f"{label} {thr:.3f} ({name})",
            )
    ax.set_xscale("log")
    if det:
        ax.set_yscale("log")
        ax.set_ylabel("FRR (1 - TAR)")
    else:
        ax.set_ylabel("TAR")
    ax.set_xlabel("FAR (0 drawn at half a count; below 1/n the sample resolves nothing)")
    ax.set_title("DET" if det else "ROC")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def plot_rule_heatmap(
    ax, rows: Sequence[SweepRow], threshold: float, value: str = "coverage", chosen: SegmentRule | None = None
) -> None:
    """``value`` ("coverage" in %, or "spill_s": segment seconds where the person is not
    labelled) over max_gap_s x min_hits at one threshold. Cells with wrong-person segments
    are hatched red and say how many; ``chosen`` gets a frame."""
    t = grid_key(threshold)
    cells = [r for r in rows if grid_key(r.threshold) == t]
    gaps = sorted({r.max_gap_s for r in cells})
    hits = sorted({r.min_hits for r in cells})

    def val(r: SweepRow) -> float:
        return 100 * (r.coverage or 0.0) if value == "coverage" else float(getattr(r, value))

    grid = np.full((len(hits), len(gaps)), np.nan)
    for r in cells:
        grid[hits.index(r.min_hits), gaps.index(r.max_gap_s)] = val(r)
    cmap = "viridis" if value == "coverage" else "magma_r"
    im = ax.imshow(grid, cmap=cmap, origin="lower", aspect="auto")
    lo, hi = np.nanmin(grid), np.nanmax(grid)
    for r in cells:
        y, x = hits.index(r.min_hits), gaps.index(r.max_gap_s)
        v = val(r)
        text = (f"{v:.1f} %" if value == "coverage" else f"{v:.2f} s") + (
            f"\n{r.wrong_segments} wrong" if r.wrong_segments else ""
        )
        bright = hi > lo and (v - lo) / (hi - lo) > 0.6
        bright = bright if value == "coverage" else not bright
        color = "red" if r.wrong_segments else ("black" if bright else "white")
        ax.text(x, y, text, ha="center", va="center", fontsize=8, color=color)
        if r.wrong_segments:
            ax.add_patch(_hatch(x, y))
        if chosen is not None and r.rule == chosen:
            from matplotlib.patches import Rectangle

            ax.add_patch(Rectangle((x - 0.48, y - 0.48), 0.96, 0.96, fill=False, edgecolor="tab:red", lw=2.5))
    ax.set_xticks(range(len(gaps)), [f"{g:g}" for g in gaps])
    ax.set_yticks(range(len(hits)), [str(h) for h in hits])
    ax.set_xlabel("max_gap_s")
    ax.set_ylabel("min_hits")
    label = "coverage %" if value == "coverage" else "segment seconds outside the labels"
    ax.set_title(f"{label} at threshold {t:.2f}")
    ax.figure.colorbar(im, ax=ax, label=label)


def _hatch(x: float, y: float):
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, hatch="//", edgecolor="red", lw=0)


@dataclass(frozen=True)
class TimelineRow:
    identity: str
    video: str  # the set's video path
    media_key: str | None
    truth: tuple[Interval, ...]
    dontcare: tuple[Interval, ...]
    hits: tuple[TimedHit, ...]
    segments: tuple[RankedSegment, ...]
    bounds: tuple[float, float]


def timeline_rows(
    labelled: LabelledSet,
    hits: Mapping[str, Mapping[str, Sequence[TimedHit]]],
    segments: Mapping[str, Sequence[RankedSegment]],
    bounds: Mapping[str, tuple[float, float]],
) -> list[TimelineRow]:
    """One row per identity and video where it is labelled or was found. Pure."""
    keys = set(bounds) | {k for per in hits.values() for k in per}
    video_of = {k: match_video(k, labelled.videos) or k for k in keys}
    key_of = {v: k for k, v in video_of.items()}
    out = []
    for who in sorted(set(hits) | set(segments)):
        videos = set(labelled.truth_of(who)) | {video_of[k] for k in hits.get(who, {})}
        videos |= {video_of.get(s.media_key, s.media_key) for s in segments.get(who, [])}
        for vid in sorted(videos):
            key = key_of.get(vid)
            out.append(
                TimelineRow(
                    who,
                    vid,
                    key,
                    labelled.truth_of(who).get(vid, ()),
                    labelled.dontcare_of(who).get(vid, ()),
                    tuple(hits.get(who, {}).get(key, ())) if key else (),
                    tuple(s for s in segments.get(who, []) if s.media_key == key),
                    bounds.get(key, (0.0, 0.0)) if key else (0.0, 0.0),
                )
            )
    return out


def plot_timelines(rows: Sequence[TimelineRow], title: str = ""):
    """Per identity and video: labelled intervals (green), don't-care (grey), segments (blue;
    red when they touch no labelled time), hits (dots, height = similarity)."""
    import matplotlib.pyplot as plt

    from pipelines.evaluate import touches

    fig, axes = plt.subplots(max(1, len(rows)), 1, figsize=FIGURE_SIZE, layout="constrained", squeeze=False)
    for ax, row in zip(axes[:, 0], rows, strict=False):
        for s, e in row.truth:
            ax.axvspan(s, e, ymin=0.0, ymax=0.3, color="tab:green", alpha=0.6)
        for s, e in row.dontcare:
            ax.axvspan(s, e, ymin=0.0, ymax=0.3, color="grey", alpha=0.5)
        for seg in row.segments:
            good = touches((seg.start_s, seg.end_s), row.truth) or touches((seg.start_s, seg.end_s), row.dontcare)
            ax.axvspan(seg.start_s, max(seg.end_s, seg.start_s + 0.05), ymin=0.35, ymax=0.6, color="tab:blue" if good else "tab:red", alpha=0.7)  # fmt: skip
        if row.hits:
            ax.plot(
                [h.timestamp_s for h in row.hits],
                [0.65 + 0.3 * h.similarity for h in row.hits],
                ".",
                ms=3,
                color="black",
            )
        lo, hi = row.bounds
        if hi <= lo:
            spans = [*row.truth, *((s.start_s, s.end_s) for s in row.segments)]
            lo, hi = (min(s for s, _ in spans), max(e for _, e in spans)) if spans else (0.0, 1.0)
        ax.set_xlim(lo, hi)
        ax.set_ylim(0, 1)
        ax.set_yticks([])
        ax.set_ylabel(f"{row.identity}\n{Path(row.video).name}", rotation=0, ha="right", va="center", fontsize=7)
        ax.tick_params(axis="x", labelsize=7)
    if title:
        fig.suptitle(title)
    return fig


def contact_sheet(columns: Mapping[str, Sequence[tuple[np.ndarray | None, str]]], per_row: int = 6):
    """Named columns of (crop, caption) tiles side by side; a crop is BGR uint8 (None: blank)."""
    import matplotlib.pyplot as plt

    n_rows = max((math.ceil(len(t) / per_row) for t in columns.values()), default=1) or 1
    fig = plt.figure(figsize=FIGURE_SIZE, layout="constrained")
    subfigs = fig.subfigures(1, max(1, len(columns)), squeeze=False)[0]
    for sub, (name, tiles) in zip(subfigs, columns.items(), strict=True):
        sub.suptitle(name, fontsize=10)
        axes = sub.subplots(n_rows, per_row, squeeze=False)
        for i, ax in enumerate(axes.flat):
            ax.axis("off")
            if i < len(tiles):
                crop, caption = tiles[i]
                if crop is not None:
                    ax.imshow(crop[:, :, ::-1])
                ax.set_title(caption, fontsize=6)
    return fig
