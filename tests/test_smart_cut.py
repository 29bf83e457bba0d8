"""Smart-cut planning (pure): which frames are re-encoded at the edges and which whole GOPs
are copied. The real cuts, frame by frame, are in tests/test_clip.py."""

from __future__ import annotations

import pytest

from pipelines.smart_cut import Packet, Part, SmartCutPlan, clean_keyframes, plan_smart_cut

FPS = 25
TOL = 1e-4


def t(i: int) -> float:
    return 0.844 + i / FPS  # a camera-like timeline that does not start at 0


def stream(frames: int, gop: int, bframes: int = 0, open_gop: bool = False) -> list[Packet]:
    """Packets in decode order: a keyframe every ``gop`` frames, then P frames each followed
    (in decode order) by the ``bframes`` B frames displayed before it. ``open_gop``: each
    keyframe after the first is decoded before the last B frames of the previous GOP."""
    out: list[Packet] = []
    for start in range(0, frames, gop):
        end = min(start + gop, frames)
        out.append(Packet(t(start), key=True))
        i = start + 1
        while i < end:
            p = min(i + bframes, end - 1)
            out.append(Packet(t(p), key=False))
            out.extend(Packet(t(b), key=False) for b in range(i, p))
            i = p + 1
    if open_gop:  # move each later keyframe ahead of the two frames displayed just before it
        for k in [k for k, p in enumerate(out) if p.key and k >= 2]:
            out[k - 2 : k + 1] = [out[k], out[k - 2], out[k - 1]]
    return out


def plan(packets, first: int, end: float, min_copy_s: float = 1.0):
    return plan_smart_cut(packets, t(first), end, min_copy_s, TOL)


@pytest.mark.parametrize("bframes", [0, 3])
def test_mid_gop_edges_are_encoded_and_whole_gops_copied(bframes):
    packets = stream(250, gop=50, bframes=bframes)
    got = plan(packets, 37, t(163) + 0.015)
    assert got == SmartCutPlan((Part(t(37), 13, copy=False), Part(t(50), 100, copy=True), Part(t(150), 14, copy=False)))
    assert got.copied_frames == 100 and got.encoded_frames == 27


def test_edges_on_keyframes_copy_everything():
    got = plan(stream(250, gop=50, bframes=3), 50, t(150))
    assert got == SmartCutPlan((Part(t(50), 100, copy=True),))


def test_end_just_after_a_keyframe_encodes_only_that_frame():
    got = plan(stream(250, gop=50, bframes=3), 50, t(150) + 0.01)
    assert got == SmartCutPlan((Part(t(50), 100, copy=True), Part(t(150), 1, copy=False)))


def test_window_to_the_end_of_the_video_copies_the_last_gop():
    got = plan(stream(230, gop=50, bframes=2), 120, t(229) + 1.0)
    assert got == SmartCutPlan((Part(t(120), 30, copy=False), Part(t(150), 80, copy=True)))


@pytest.mark.parametrize(
    ("first", "end", "why"),
    [
        (55, t(95), "no keyframe"),  # inside one GOP
        (60, t(120), "no whole GOP"),  # spans one keyframe, but no GOP ends inside
        (45, t(75), "no whole GOP"),  # 50..75 is part of a GOP
    ],
)
def test_windows_without_enough_whole_gops_are_reencoded(first, end, why):
    got = plan(stream(250, gop=50, bframes=3), first, end)
    assert isinstance(got, str) and why in got


def test_short_copies_are_not_worth_three_parts():
    packets = stream(250, gop=12, bframes=3)
    assert isinstance(plan(packets, 25, t(50)), str)  # 36..48 is 0.48 s
    assert isinstance(plan(packets, 25, t(50), min_copy_s=0.4), SmartCutPlan)


def test_open_gops_are_not_copied():
    closed, opened = stream(250, gop=50, bframes=3), stream(250, gop=50, bframes=3, open_gop=True)
    assert [closed[i].pts_s for i in clean_keyframes(closed)] == [t(k) for k in range(0, 250, 50)]
    assert [opened[i].pts_s for i in clean_keyframes(opened)] == [t(0)]
    assert "no keyframe" in plan(opened, 37, t(163))


def test_a_window_start_missing_from_the_packets_is_refused():
    packets = stream(250, gop=50)
    got = plan_smart_cut(packets, t(37) + 0.01, t(163), 1.0, TOL)  # not a frame's pts
    assert isinstance(got, str) and "first frame" in got
