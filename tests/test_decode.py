from __future__ import annotations

import av
import numpy as np
import pytest
from PIL import Image

from pipelines.decode import GridSampler, load_photo, plan_chunks, probe_photo, probe_video, sample_video
from pipelines.synthetic import ffmpeg


def test_plan_chunks_cover_every_grid_point_once():
    chunks = plan_chunks(start_s=0.844, duration_s=125.3, sample_fps=2.0, chunk_s=60.0)
    owned = [k for c in chunks for k in range(c.first_sample, c.end_sample)]
    assert owned == list(range(251))  # floor(125.3 * 2) + 1 samples
    assert chunks[0].start_s == pytest.approx(0.844)
    assert chunks[1].start_s == pytest.approx(60.844)
    assert len(chunks) == 3


def test_grid_sampler_picks_nearest_frames_and_skips_gaps():
    s = GridSampler(origin_s=1.0, sample_fps=2.0, video_fps=10.0, first_sample=0, end_sample=10)
    frames = [1.0 + i / 10 for i in range(12)]  # 1.0 .. 2.1
    taken = [(t, k) for t in frames if (k := s.accept(t)) is not None]
    assert [k for _, k in taken] == [0, 1, 2]
    assert [round(t, 2) for t, _ in taken] == [1.0, 1.5, 2.0]
    # A gap in the stream (no frames 2.1 .. 3.9) skips the grid points inside it.
    assert s.accept(4.0) == 3
    assert s.next_sample == 7
    assert s.accept(4.5) == 7


def test_grid_sampler_respects_chunk_end():
    s = GridSampler(0.0, 2.0, 30.0, first_sample=2, end_sample=4)
    got = [k for t in np.arange(0, 5, 1 / 30) if (k := s.accept(float(t))) is not None]
    assert got == [2, 3]
    assert s.done


def test_chunked_decode_equals_single_pass(synthetic_event):
    uri = str(synthetic_event.pan.path)
    probe = probe_video(uri)
    assert probe.width == 640 and probe.height == 360
    single = [
        (f.timestamp_s, f.frame_index)
        for f in sample_video(uri, probe, plan_chunks(probe.start_s, probe.duration_s, 2.0, 1000)[0], 2.0)
    ]
    chunked = [
        (f.timestamp_s, f.frame_index)
        for c in plan_chunks(probe.start_s, probe.duration_s, 2.0, 3.0)
        for f in sample_video(uri, probe, c, 2.0)
    ]
    assert chunked == single
    assert len(single) == 32  # 0.0 .. 15.5 s: the last frame (15.9 s) is not near 16.0
    assert np.allclose(np.diff([t for t, _ in single]), 0.5, atol=0.051)


def test_timestamps_are_presentation_times_not_index_over_fps(tmp_path, synthetic_event):
    shifted = tmp_path / "shifted.mp4"
    # Same video, container timeline starting at 0.844 s, like real camera files.
    ffmpeg("-i", str(synthetic_event.pan.path), "-c", "copy", "-output_ts_offset", "0.844", str(shifted))
    probe = probe_video(str(shifted))
    assert probe.start_s == pytest.approx(0.844, abs=0.01)
    frames = list(sample_video(str(shifted), probe, plan_chunks(probe.start_s, probe.duration_s, 2.0, 60)[0], 2.0))
    assert frames[0].timestamp_s == pytest.approx(0.844, abs=0.01)
    assert frames[0].frame_index == 0
    assert frames[2].timestamp_s == pytest.approx(1.844, abs=0.06)


def test_photo_exif_orientation_is_applied(tmp_path):
    img = Image.fromarray(np.zeros((20, 40, 3), np.uint8))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif)
    assert load_photo(str(path)).shape == (40, 20, 3)
    assert (probe_photo(str(path)).width, probe_photo(str(path)).height) == (20, 40)


def test_corrupt_video_probe_raises(synthetic_event):
    with pytest.raises(av.error.InvalidDataError):
        probe_video(str(synthetic_event.corrupt))
