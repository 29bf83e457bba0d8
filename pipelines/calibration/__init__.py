"""Threshold calibration for the notebooks (notebooks/threshold_tuning.ipynb, explore_event.ipynb).

The notebooks stay thin: everything they compute lives in this package, one module per step,
and they reach all of it as ``from pipelines import calibration as cal``. Three layers:

- **Edges** (store, models, files): ``pairs`` (``load_set``, ``read_pairs``), ``photos``
  (``embed_photos``, ``reference_set``), ``events`` (``index_set`` / ``open_event``: an
  ``EventIndex`` with media, bounds, faces, tracks; a ``CachedStore``), ``sweeps.match_all``
  (the product's own ``find_person``, once per threshold and identity), ``crops``
  (``read_frames`` / ``video_crops``, ``dropped_faces``), ``local_ray`` (``quiet_ray_logs`` /
  ``stop_ray``).
- **Pure functions** (numbers in, numbers out; unit-tested in tests/test_calibration.py):
  ``rates`` (TAR/FAR and thresholds: ``far``, ``tar``, ``threshold_at_far``, ``point_at``,
  ``operating_point``, ``far_upper_bound``, ``roc``), genuine/impostor scores (``pair_scores``,
  ``label_pairs``, ``video_scores``: ``video_face_scores``, ``score_jitter``), the
  segment-rule sweep (``sweeps``: ``threshold_grid``, ``rule_grid``, ``resegment``, ``sweep``,
  ``spill_seconds``) and the recommendation rule (``recommendation``: ``recommend`` ->
  ``Recommendation``, in named steps).
- **Figures** (``figures``; matplotlib, imported lazily: it is only in the ``notebooks`` extra):
  ``figure``, ``save_figure`` (FIGURE_SIZE at FIGURE_DPI), ``plot_histograms``,
  ``plot_roc``, ``plot_rule_heatmap``, ``plot_timelines``, ``contact_sheet``.

Conventions: similarities are cosines; the product accepts a face when its score is ``>=``
the threshold, so FAR(t) is the share of impostor scores ``>= t`` and TAR(t) the share of
genuine scores ``>= t``. Writing a recommendation to an event is the online side's job
(``app.features.tuning.apply_recommendation``): pipelines never import app.
"""

from __future__ import annotations

from pipelines.calibration.crops import (
    DroppedFace,
    crop_face,
    dropped_faces,
    photo_crop,
    read_frames,
    sample_times,
    video_crops,
)
from pipelines.calibration.events import (
    CachedStore,
    EventFaces,
    EventIndex,
    event_faces,
    index_set,
    open_event,
    set_sources,
)
from pipelines.calibration.figures import (
    FIGURE_DPI,
    FIGURE_SIZE,
    TimelineRow,
    contact_sheet,
    figure,
    plot_histograms,
    plot_roc,
    plot_rule_heatmap,
    plot_timelines,
    save_figure,
    timeline_rows,
)
from pipelines.calibration.local_ray import (
    local_cpus,
    quiet_ray_logs,
    stop_ray,
)
from pipelines.calibration.pairs import (
    Pair,
    find_pair_images,
    label_pairs,
    load_set,
    read_pairs,
)
from pipelines.calibration.photos import (
    PhotoEmbedding,
    ReferenceSet,
    embed_photos,
    pair_scores,
    read_photo,
    reference_set,
    scored_pairs,
)
from pipelines.calibration.rates import (
    FAR_TARGETS,
    OperatingPoint,
    ScoreSet,
    far,
    far_upper_bound,
    operating_point,
    operating_points,
    point_at,
    roc,
    tar,
    threshold_at_far,
)
from pipelines.calibration.recommendation import (
    Recommendation,
    recommend,
)
from pipelines.calibration.sweeps import (
    KEY_DIGITS,
    Hits,
    SegmentRule,
    SweepRow,
    as_eval_segments,
    match_all,
    resegment,
    rule_grid,
    spill_seconds,
    sweep,
    sweep_table,
    threshold_grid,
)
from pipelines.calibration.video_scores import (
    LABEL_TOLERANCE_S,
    FaceScore,
    VideoFaceScores,
    score_jitter,
    video_face_scores,
)

__all__ = [
    "FAR_TARGETS",
    "FIGURE_DPI",
    "FIGURE_SIZE",
    "KEY_DIGITS",
    "LABEL_TOLERANCE_S",
    "CachedStore",
    "DroppedFace",
    "EventFaces",
    "EventIndex",
    "FaceScore",
    "Hits",
    "OperatingPoint",
    "Pair",
    "PhotoEmbedding",
    "Recommendation",
    "ReferenceSet",
    "ScoreSet",
    "SegmentRule",
    "SweepRow",
    "TimelineRow",
    "VideoFaceScores",
    "as_eval_segments",
    "contact_sheet",
    "crop_face",
    "dropped_faces",
    "embed_photos",
    "event_faces",
    "far",
    "far_upper_bound",
    "figure",
    "find_pair_images",
    "index_set",
    "label_pairs",
    "load_set",
    "local_cpus",
    "match_all",
    "open_event",
    "operating_point",
    "operating_points",
    "pair_scores",
    "photo_crop",
    "plot_histograms",
    "plot_roc",
    "plot_rule_heatmap",
    "plot_timelines",
    "point_at",
    "quiet_ray_logs",
    "read_frames",
    "read_pairs",
    "read_photo",
    "recommend",
    "reference_set",
    "resegment",
    "roc",
    "rule_grid",
    "sample_times",
    "save_figure",
    "score_jitter",
    "scored_pairs",
    "set_sources",
    "spill_seconds",
    "stop_ray",
    "sweep",
    "sweep_table",
    "tar",
    "threshold_at_far",
    "threshold_grid",
    "timeline_rows",
    "video_crops",
    "video_face_scores",
]
