"""Search through the IVF_PQ index, forced on a small table by a low ``ann_min_rows``:
"every face at or above the threshold" must keep the recall of exact search at the chosen
nprobes/refine settings, and an event below ``ann_min_rows`` is searched exactly."""

from __future__ import annotations

import numpy as np

from pipelines.config import StoreSettings
from pipelines.models.base import PackInfo
from pipelines.store import FaceStore
from pipelines.synthetic_faces import face_rows, unit

DIM, THRESHOLD = 128, 0.4


def test_ann_search_keeps_the_recall_of_exact_search_at_the_chosen_settings(tmp_path):
    rng = np.random.default_rng(5)
    pack = PackInfo(name="synthetic", version="1", dim=DIM, threshold=THRESHOLD, licence="test")
    defaults = StoreSettings()
    store = FaceStore(
        str(tmp_path / "db"), pack, ann_min_rows=3000,
        ann_nprobes=defaults.ann_nprobes, ann_refine_factor=defaults.ann_refine_factor,
    )  # fmt: skip
    # Faces around 150 people (cosine ~0.7 to their centre, ~0.5 between two of their
    # faces): many matches sit near the threshold, the hard case for an approximate index.
    centres = unit(rng.standard_normal((150, DIM)))
    big = unit(centres[rng.integers(0, 150, 6000)] + 0.09 * rng.standard_normal((6000, DIM)))
    small = unit(centres[rng.integers(0, 150, 500)] + 0.09 * rng.standard_normal((500, DIM)))
    store.faces.add(face_rows(pack, 1, big))
    store.faces.add(face_rows(pack, 2, small))
    store.ensure_indices()
    assert store._has_vector_index()

    def exact(event_id: int, query: np.ndarray) -> set[str]:
        q = (
            store.faces.search(query, vector_column_name="vector").distance_type("cosine")
            .where(f"event_id = {event_id}", prefilter=True).bypass_vector_index()
            .distance_range(upper_bound=1.0 - THRESHOLD + 1e-6).select(["face_id"]).limit(10_000)
        )  # fmt: skip
        return set(q.to_arrow().column("face_id").to_pylist())

    recalls = {1: [], 2: []}
    for i in range(20):
        query = unit(centres[i * 7] + 0.09 * rng.standard_normal(DIM))
        for event_id in (1, 2):
            truth = exact(event_id, query)
            hits = store.search(1, event_id, query, min_similarity=THRESHOLD, limit=None)
            assert all(h.similarity >= THRESHOLD - 1e-5 for h in hits)
            found = {h.face_id for h in hits}
            recalls[event_id].append(len(found & truth) / len(truth) if truth else 1.0)
    assert np.mean(recalls[1]) >= 0.98, recalls[1]  # 6,000 faces: through the index
    assert recalls[2] == [1.0] * 20  # 500 faces, below ann_min_rows: exact
