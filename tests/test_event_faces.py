"""Events' faces held in memory (pipelines.event_faces): a searcher with the cache answers
exactly what the table answers, through every kind of write, and is never stale."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipelines.event_faces import EventFaces, EventFacesCache, best_matches, event_faces
from pipelines.models.base import PackInfo
from pipelines.store import FaceStore
from pipelines.synthetic_faces import face_rows, unit

DIM, THRESHOLD = 128, 0.4
PACK = PackInfo(name="synthetic", version="1", dim=DIM, threshold=THRESHOLD, licence="test")


def held(rows: int, rng: np.random.Generator, media_type: str = "video") -> EventFaces:
    table = face_rows(PACK, 1, unit(rng.standard_normal((rows, DIM))), media_type=media_type)
    return event_faces(table.append_column("_rowid", pa.array(np.arange(rows, dtype=np.uint64))), DIM, 1)


def test_best_matches_are_every_face_at_the_threshold_best_first(tmp_path):
    rng = np.random.default_rng(1)
    faces = held(500, rng)
    query = rng.standard_normal(DIM) * 3.0  # not unit: normalised like the table's cosine
    sims = faces.vectors @ unit(query)
    got = best_matches(faces, query, min_similarity=0.05, limit=None)
    assert [i for i, _ in got] == sorted(np.flatnonzero(sims > 0.05 - 1e-6), key=lambda i: -sims[i])
    assert all(abs(s - sims[i]) < 1e-6 for i, s in got)
    assert len(best_matches(faces, query, min_similarity=None, limit=7)) == 7
    assert best_matches(faces, query, None, 3) == best_matches(faces, query, None, None)[:3]
    assert best_matches(faces, query, 0.05, None, media_type="photo") == []


def test_the_cache_keeps_the_most_recent_events_within_its_budget():
    rng = np.random.default_rng(2)
    one, two, three = held(100, rng), held(100, rng), held(100, rng)
    cache = EventFacesCache(max_bytes=one.nbytes * 2 + 10)
    assert cache.put((1, 1), one) and cache.put((1, 2), two)
    assert cache.get((1, 1)) is one  # now the most recent
    assert cache.put((1, 3), three)
    assert cache.get((1, 2)) is None and cache.get((1, 1)) is one and cache.get((1, 3)) is three
    assert cache.nbytes <= cache.max_bytes
    assert not cache.put((1, 4), held(400, rng)) and cache.get((1, 4)) is None  # over it alone


@pytest.fixture
def stores(tmp_path):
    """One table, two handles: the searcher with the cache, and the plain one (the truth),
    which also does the writing, as the index does from other processes."""
    cached = FaceStore(str(tmp_path / "db"), PACK, search_cache_mb=64)
    plain = FaceStore(str(tmp_path / "db"), PACK)
    return cached, plain


def same_answers(cached: FaceStore, plain: FaceStore, queries: list[np.ndarray], event_id: int = 1) -> int:
    """Every query gives the same faces, order and similarities both ways; returns hits."""
    hits = 0
    for q in queries:
        for media_type in (None, "video"):
            want = plain.search(1, event_id, q, min_similarity=THRESHOLD, limit=None, media_type=media_type)
            got = cached.search(1, event_id, q, min_similarity=THRESHOLD, limit=None, media_type=media_type)
            assert {h.face_id for h in got} == {h.face_id for h in want}
            by_id = {h.face_id: h.similarity for h in want}
            assert all(abs(h.similarity - by_id[h.face_id]) < 1e-5 for h in got)
            assert [h.similarity for h in got] == sorted((h.similarity for h in got), reverse=True)
            hits += len(got)
        top = cached.search(1, event_id, q, min_similarity=None, limit=5)
        assert [h.face_id for h in top] == [h.face_id for h in plain.search(1, event_id, q, None, 5)]
    return hits


def test_the_cached_search_answers_as_the_table_through_every_kind_of_write(stores):
    cached, plain = stores
    rng = np.random.default_rng(3)
    centres = unit(rng.standard_normal((30, DIM)))

    def around(n: int) -> np.ndarray:
        return unit(centres[rng.integers(0, 30, n)] + 0.09 * rng.standard_normal((n, DIM)))

    queries = [unit(c + 0.09 * rng.standard_normal(DIM)) for c in centres[:6]]
    plain.add_faces(face_rows(PACK, 1, around(600)))
    plain.add_faces(face_rows(PACK, 2, around(300)))
    assert same_answers(cached, plain, queries) > 50
    first = cached.event_faces(1, 1)
    assert first is not None and first.rows == 600

    # Another event written: the table's version moves, the copy is checked and kept.
    plain.add_faces(face_rows(PACK, 2, around(50), first=300))
    assert cached.event_faces(1, 1) is first
    same_answers(cached, plain, queries)

    # Faces added to the event (an index run streaming in): only they are read and appended.
    plain.add_faces(face_rows(PACK, 1, around(120), first=600))
    grown = cached.event_faces(1, 1)
    assert grown is not first and grown.rows == 720
    assert grown.vectors[:600].tobytes() == first.vectors.tobytes()
    same_answers(cached, plain, queries)

    # A video deleted (its faces gone): read again.
    plain.delete_media_faces(1, 1, ["e1/v0.mp4"])
    assert cached.event_faces(1, 1).rows == 620
    same_answers(cached, plain, queries)

    # Re-indexed to the same number of faces, new ids (a source moved): never the old ones.
    plain.delete_media_faces(1, 1, ["e1/v1.mp4"])
    plain.add_faces(face_rows(PACK, 1, around(100), first=10_100))
    again = cached.event_faces(1, 1)
    ids = set(again.columns["face_id"].to_pylist())
    assert again.rows == 620 and "1-10100" in ids and "1-150" not in ids
    assert ids == {h.face_id for h in plain.search(1, 1, queries[0], min_similarity=-1.0, limit=None)}
    same_answers(cached, plain, queries)

    # Compaction moves rows into new fragments: still the same answers.
    plain.optimize()
    same_answers(cached, plain, queries)
    # Photos of the event are found by a media_type search as well.
    plain.add_faces(face_rows(PACK, 1, around(40), first=20_000, media_type="photo"))
    photos = cached.search(1, 1, queries[0], min_similarity=-1.0, limit=None, media_type="photo")
    assert len(photos) == 40 and {h.media_type for h in photos} == {"photo"}
    # Nobody there: no hits (not an error).
    assert cached.search(1, 1, -queries[0], min_similarity=0.99, limit=None) == []
    assert cached.search(1, 3, queries[0], min_similarity=THRESHOLD, limit=None) == []  # an empty event


def test_an_event_over_the_budget_is_searched_from_the_table(tmp_path):
    rng = np.random.default_rng(4)
    small = FaceStore(str(tmp_path / "db"), PACK, search_cache_mb=0.05)  # ~50 KiB: under 100 faces
    plain = FaceStore(str(tmp_path / "db"), PACK)
    small.add_faces(face_rows(PACK, 1, unit(rng.standard_normal((400, DIM)))))
    assert small.event_faces(1, 1) is None
    queries = [unit(rng.standard_normal(DIM)) for _ in range(3)]
    for q in queries:
        want = plain.search(1, 1, q, min_similarity=0.1, limit=None)
        assert [h.face_id for h in small.search(1, 1, q, min_similarity=0.1, limit=None)] == [h.face_id for h in want]
    assert small.event_cache.nbytes == 0
