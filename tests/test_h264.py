"""pipelines/h264.py on hand-built access units (pure): Annex B start codes of both lengths
and length-prefixed (AVCC) packets give the same NAL units; SEI messages are read from the
unescaped payload, so emulation-prevention bytes inside an earlier message or inside the
recovery point itself do not shift what is read."""

from __future__ import annotations

import pytest

from pipelines import h264

SPS, PPS, AUD = 7, 8, 9


class BitWriter:
    def __init__(self) -> None:
        self.bits: list[int] = []

    def u(self, value: int, n: int) -> BitWriter:
        self.bits += [(value >> (n - 1 - i)) & 1 for i in range(n)]
        return self

    def ue(self, value: int) -> BitWriter:
        code = value + 1
        n = code.bit_length()
        return self.u(0, n - 1).u(code, n)

    def bytes(self, trailing: bool = False) -> bytes:
        bits = self.bits + ([1] if trailing else [])
        bits += [0] * (-len(bits) % 8)
        return bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))


def escape(rbsp: bytes) -> bytes:
    """Insert emulation-prevention bytes as an encoder does (00 00 0x with x <= 3)."""
    out, zeros = bytearray(), 0
    for b in rbsp:
        if zeros >= 2 and b <= 3:
            out.append(3)
            zeros = 0
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


def nal(kind: int, rbsp: bytes = b"\x88\x84", ref_idc: int = 3) -> bytes:
    return bytes([(ref_idc << 5) | kind]) + escape(rbsp)


def sei_message(ptype: int, payload: bytes) -> bytes:
    """One SEI message (type and size coded in 255-steps) over the *unescaped* payload."""

    def coded(v: int) -> bytes:
        return b"\xff" * (v // 255) + bytes([v % 255])

    return coded(ptype) + coded(len(payload)) + payload


def recovery_payload(count: int, broken_link: bool = False) -> bytes:
    return BitWriter().ue(count).u(1, 1).u(int(broken_link), 1).u(0, 2).bytes()


def sei(*messages: bytes) -> bytes:
    return nal(h264.NAL_SEI, b"".join(messages) + b"\x80", ref_idc=0)


def annex_b(units: list[bytes], long_codes: tuple[bool, ...] | None = None) -> bytes:
    long_codes = long_codes or tuple(i == 0 for i in range(len(units)))
    return b"".join(
        (b"\x00\x00\x00\x01" if long else b"\x00\x00\x01") + u for u, long in zip(units, long_codes, strict=True)
    )


def avcc(units: list[bytes], size: int = 4) -> bytes:
    return b"".join(len(u).to_bytes(size, "big") + u for u in units)


def test_escape_helper_inserts_prevention_bytes():
    assert escape(b"\x00\x00\x01\x00\x00\x00") == b"\x00\x00\x03\x01\x00\x00\x03\x00"
    assert h264.unescape(escape(b"\x00\x00\x02\x00\x00\x03\x00\x00")) == b"\x00\x00\x02\x00\x00\x03\x00\x00"


@pytest.mark.parametrize(
    "long_codes",
    [(True, True, True, True, True), (False, False, False, False, False), (True, False, True, False, False)],
    ids=["4-byte", "3-byte", "mixed"],
)
def test_annex_b_and_avcc_give_the_same_units(long_codes):
    # The slice's payload holds 00 00 0x runs, escaped: no false start code may appear.
    units = [
        nal(AUD, b"\xf0"),
        nal(SPS, b"\x4d\x40\x1e\x00\x00\x00\x01"),
        nal(PPS, b"\xee\x3c\x80"),
        sei(sei_message(h264.SEI_RECOVERY_POINT, recovery_payload(0))),
        nal(h264.NAL_IDR, b"\x88\x00\x00\x01\x00\x00\x00\x02\x84"),
    ]
    data = annex_b(units, long_codes)
    assert h264.split_nal_units(data, None) == units
    assert h264.split_nal_units(avcc(units), 4) == units
    unit = h264.access_unit(data, None)
    assert unit.nal_types == (AUD, SPS, PPS, h264.NAL_SEI, h264.NAL_IDR)
    assert unit == h264.access_unit(avcc(units), 4) and unit.idr


def test_trailing_zero_bytes_before_a_start_code_do_not_make_units():
    units = [nal(h264.NAL_SEI, b"\x05\x01\xaa\x80", ref_idc=0), nal(h264.NAL_SLICE)]
    data = b"\x00\x00\x01" + units[0] + b"\x00\x00\x00\x00\x00\x01" + units[1]
    assert h264.split_nal_units(data, None) == units
    assert h264.split_nal_units(data + b"\x00\x00", None) == units


def test_recovery_point_after_an_sei_whose_payload_needed_escaping():
    """A user-data SEI full of zero bytes comes first: escaped, its 24 bytes take more than 24
    bytes on the wire. Reading sizes off the escaped bytes would land inside it."""
    user_data = bytes(range(16)) + b"\x00" * 8  # a UUID, then zeros (escaped twice)
    message = sei_message(5, user_data) + sei_message(h264.SEI_RECOVERY_POINT, recovery_payload(0))
    unit_nal = sei(message)
    assert unit_nal.count(b"\x00\x00\x03") >= 2  # the test means something
    for data, size in ((annex_b([unit_nal, nal(h264.NAL_SLICE)]), None), (avcc([unit_nal, nal(h264.NAL_SLICE)]), 4)):
        unit = h264.access_unit(data, size)
        assert unit.nal_types == (h264.NAL_SEI, h264.NAL_SLICE)
        assert unit.recovery_frame_cnt == 0 and not unit.broken_link
        assert unit.recovery_point and not unit.idr


def test_recovery_point_whose_own_bits_needed_escaping():
    # ue(2**22 - 1) starts with 22 zero bits: 00 00 02 on the wire gets a prevention byte.
    count = 2**22 - 1
    payload = recovery_payload(count, broken_link=True)
    assert payload[:3] == b"\x00\x00\x02"
    unit_nal = sei(sei_message(h264.SEI_RECOVERY_POINT, payload))
    assert b"\x00\x00\x03\x02" in unit_nal
    assert h264.recovery_point(unit_nal) == (count, True)
    unit = h264.access_unit(annex_b([unit_nal]), None)
    assert (unit.recovery_frame_cnt, unit.broken_link, unit.recovery_point) == (count, True, False)


@pytest.mark.parametrize(("count", "broken"), [(0, False), (3, False), (0, True)])
def test_only_count_zero_without_a_broken_link_is_a_recovery_point(count, broken):
    unit = h264.access_unit(avcc([sei(sei_message(6, recovery_payload(count, broken))), nal(1)]), 4)
    assert (unit.recovery_frame_cnt, unit.broken_link) == (count, broken)
    assert unit.recovery_point == (count == 0 and not broken)


def test_payload_types_and_sizes_past_255_are_summed():
    big = b"\x11" * 300  # size coded as ff 2d
    message = sei_message(256, b"\x01") + sei_message(5, big) + sei_message(6, recovery_payload(0))
    assert message.startswith(b"\xff\x01\x01\x01\x05\xff\x2d")
    assert h264.recovery_point(sei(message)) == (0, False)


@pytest.mark.parametrize(
    "raw",
    [
        b"\x06\x06",  # type, no size
        b"\x06\x05\x80",  # size past the end
        b"\x06\x01\x00\x80",  # payload of zero bits: no exp-Golomb code
        b"\x05\x02\xaa\xbb\x80",  # no recovery point at all
    ],
)
def test_truncated_or_absent_recovery_points_read_as_none(raw):
    assert h264.recovery_point(bytes([h264.NAL_SEI]) + raw) is None
    assert h264.access_unit(avcc([bytes([h264.NAL_SEI]) + raw]), 4).recovery_frame_cnt is None


def test_nal_length_size_from_avcc_extradata_only():
    avcc_extradata = bytes([1, 0x4D, 0x40, 0x1E, 0xFC | 3, 0xE1]) + b"\x00\x04" + b"\x67\x4d\x40\x1e"
    assert h264.nal_length_size(avcc_extradata) == 4
    assert h264.nal_length_size(bytes([1, 0x4D, 0x40, 0x1E, 0xFC | 1, 0xE1, 0])) == 2
    assert h264.nal_length_size(b"\x00\x00\x00\x01\x67\x4d\x40\x1e") is None  # Annex B extradata
    assert h264.nal_length_size(None) is None


def test_a_truncated_length_prefixed_unit_ends_the_list():
    units = [nal(SPS), nal(h264.NAL_IDR, b"\x88" * 10)]
    data = avcc(units)
    assert h264.split_nal_units(data[:-3], 4) == units[:1]
    assert h264.split_nal_units(avcc(units, size=2), 2) == units
