"""H.264 access units read from packet bytes (pure): which NAL units a packet holds and what
its recovery-point SEI says, so a smart cut knows a clean random-access point from a sync
sample that only claims to be one.

An MP4's sync-sample table (and so PyAV's ``packet.is_keyframe``) marks IDR pictures (NAL
type 5) and, in files made for DASH streaming, also non-IDR I pictures (NAL type 1) that
follow a recovery-point SEI. Only an IDR is a clean start by itself: a non-IDR I picture may
have leading pictures that reference the GOP before it, and ffmpeg's decoder does not
reliably start at one after a seek (docs/MEASURED: a 1.5-6.6 s hole at a smart cut's join).

Packets in MP4 are length-prefixed (AVCC; the length size is in the avcC extradata, usually
4 bytes); in MPEG-TS and raw streams they carry Annex B start codes.
"""

from __future__ import annotations

from dataclasses import dataclass

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
SEI_RECOVERY_POINT = 6


@dataclass(frozen=True)
class AccessUnit:
    """What one packet holds: its NAL unit types in order, and the recovery-point SEI's
    ``recovery_frame_cnt`` and ``broken_link_flag`` when it carries one."""

    nal_types: tuple[int, ...]
    recovery_frame_cnt: int | None = None
    broken_link: bool = False

    @property
    def idr(self) -> bool:
        return NAL_IDR in self.nal_types

    @property
    def recovery_point(self) -> bool:
        """A non-IDR picture that decodes exactly from here on (recovery count 0, link
        not broken). Leading pictures are a separate question (the packets' order tells)."""
        return self.recovery_frame_cnt == 0 and not self.broken_link


def nal_length_size(extradata: bytes | None) -> int | None:
    """The NAL length-prefix size from avcC extradata, or None for Annex B packets."""
    if extradata and len(extradata) >= 7 and extradata[0] == 1:
        return (extradata[4] & 0x03) + 1
    return None


def split_nal_units(data: bytes, length_size: int | None) -> list[bytes]:
    """The NAL units of one packet (AVCC when ``length_size`` is set, else Annex B).
    A truncated length-prefixed unit ends the list."""
    units: list[bytes] = []
    if length_size is not None:
        pos = 0
        while pos + length_size <= len(data):
            size = int.from_bytes(data[pos : pos + length_size], "big")
            pos += length_size
            if size == 0 or pos + size > len(data):
                break
            units.append(data[pos : pos + size])
            pos += size
        return units
    starts: list[tuple[int, int]] = []  # (start code position, payload position)
    i = 0
    while (j := data.find(b"\x00\x00\x01", i)) >= 0:
        code = j - 1 if j > 0 and data[j - 1] == 0 else j
        starts.append((code, j + 3))
        i = j + 3
    for n, (_, payload) in enumerate(starts):
        end = starts[n + 1][0] if n + 1 < len(starts) else len(data)
        # Zero bytes before a start code (trailing_zero_8bits) are not the unit's: a NAL
        # unit never ends in 0x00 (its last byte holds the RBSP stop bit, or is an
        # emulation-prevention 0x03 after cabac_zero_words).
        unit = data[payload:end].rstrip(b"\x00")
        if unit:
            units.append(unit)
    return units


def unescape(rbsp: bytes) -> bytes:
    """Remove emulation-prevention bytes (00 00 03 -> 00 00)."""
    return rbsp.replace(b"\x00\x00\x03", b"\x00\x00")


class _Bits:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def bit(self) -> int:
        if self.pos >= len(self.data) * 8:
            raise ValueError("read past the end of the SEI")
        byte = self.data[self.pos >> 3]
        self.pos += 1
        return (byte >> (7 - ((self.pos - 1) & 7))) & 1

    def ue(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad exp-Golomb code")
        value = 1
        for _ in range(zeros):
            value = (value << 1) | self.bit()
        return value - 1


def recovery_point(sei_nal: bytes) -> tuple[int, bool] | None:
    """(recovery_frame_cnt, broken_link_flag) of a SEI NAL unit's recovery-point message,
    or None when it has none (or it cannot be read)."""
    data = unescape(sei_nal[1:])
    pos = 0
    while pos < len(data) and not (data[pos] == 0x80 and pos == len(data) - 1):  # rbsp trailing bits
        ptype = 0
        while pos < len(data) and data[pos] == 0xFF:
            ptype += 255
            pos += 1
        if pos >= len(data):
            return None
        ptype += data[pos]
        pos += 1
        size = 0
        while pos < len(data) and data[pos] == 0xFF:
            size += 255
            pos += 1
        if pos >= len(data):
            return None
        size += data[pos]
        pos += 1
        if pos + size > len(data):  # a message cut short: nothing in it can be trusted
            return None
        payload = data[pos : pos + size]
        pos += size
        if ptype == SEI_RECOVERY_POINT:
            try:
                bits = _Bits(payload)
                count = bits.ue()
                bits.bit()  # exact_match_flag
                return count, bool(bits.bit())
            except ValueError:
                return None
    return None


def access_unit(data: bytes, length_size: int | None) -> AccessUnit:
    """The NAL unit types of one packet and its recovery point, if any."""
    types: list[int] = []
    recovery: tuple[int, bool] | None = None
    for nal in split_nal_units(data, length_size):
        kind = nal[0] & 0x1F
        types.append(kind)
        if kind == NAL_SEI and recovery is None:
            recovery = recovery_point(nal)
    if recovery is None:
        return AccessUnit(tuple(types))
    return AccessUnit(tuple(types), recovery[0], recovery[1])
