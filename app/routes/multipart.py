"""Reading a multipart form with our own limits (python-multipart directly).

Starlette's ``request.form()`` keeps python-multipart's 4 KiB limit per part header line, so a
phone photo with a long file name (a ~4,100-character ASCII or ~1,400-character CJK name)
failed as "invalid multipart data". Here header lines may be up to ``MAX_HEADER_BYTES`` and the
file name is never used; file parts are kept in memory up to one byte past the size limit
(enough to say 413), fields up to ``MAX_FIELD_BYTES``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from app.errors import ApiError

MAX_HEADER_BYTES = 64 * 1024
MAX_FIELD_BYTES = 1024


@dataclass
class Form:
    files: dict[str, list[bytes]] = field(default_factory=dict)
    fields: dict[str, list[str]] = field(default_factory=dict)


class _Collector:
    def __init__(self, max_file_bytes: int, max_files: int, max_fields: int) -> None:
        self.form = Form()
        self.limits = (max_file_bytes, max_files, max_fields)
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.disposition = b""
        self.data = bytearray()

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.part_begin,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
            "on_header_field": lambda d, s, e: self.header_field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self.header_value.extend(d[s:e]),
            "on_header_end": self.header_end,
        }

    def part_begin(self) -> None:
        self.disposition, self.data = b"", bytearray()

    def header_end(self) -> None:
        if bytes(self.header_field).lower() == b"content-disposition":
            self.disposition = bytes(self.header_value)
        self.header_field, self.header_value = bytearray(), bytearray()

    def part_data(self, data: bytes, start: int, end: int) -> None:
        max_file_bytes = self.limits[0]
        room = max_file_bytes + 1 - len(self.data)  # one byte past the limit says "too large"
        if room > 0:
            self.data.extend(data[start : min(end, start + room)])

    def part_end(self) -> None:
        kind, params = parse_options_header(self.disposition)
        name = params.get(b"name", b"").decode("utf-8", "replace")
        _, max_files, max_fields = self.limits
        if kind != b"form-data" or not name:
            raise ApiError(400, "Every multipart part needs a form-data name.", "invalid_form")
        if b"filename" in params:
            self.form.files.setdefault(name, []).append(bytes(self.data))
            if sum(len(v) for v in self.form.files.values()) > max_files:
                raise ApiError(400, f"Send at most {max_files} files.", "too_many_files")
        else:
            if len(self.data) > MAX_FIELD_BYTES:
                raise ApiError(400, f"The form field '{name}' is too long.", "invalid_form")
            self.form.fields.setdefault(name, []).append(self.data.decode("utf-8", "replace"))
            if sum(len(v) for v in self.form.fields.values()) > max_fields:
                raise ApiError(400, "Too many form fields.", "invalid_form")


async def read_form(
    request: Request, max_file_bytes: int, max_files: int, max_fields: int = 4, timeout_s: float = 30.0
) -> Form:
    """The request's form: multipart read here, anything else (urlencoded fields, no body) by
    Starlette; 400 ``invalid_form`` when it cannot be read, 408 ``body_timeout`` when the body
    has not fully arrived within ``timeout_s`` (a slow or short body never holds a worker)."""
    try:
        async with asyncio.timeout(timeout_s):
            return await _read_form(request, max_file_bytes, max_files, max_fields)
    except TimeoutError:
        raise ApiError(408, f"The request body did not arrive within {timeout_s:g} s.", "body_timeout") from None


async def _read_form(request: Request, max_file_bytes: int, max_files: int, max_fields: int) -> Form:
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data":
        try:
            fields = await request.form(max_files=0, max_fields=max_fields)
        except Exception as exc:
            raise ApiError(400, f"Expected a multipart form ({exc}).", "invalid_form") from None
        return Form(fields={k: [str(v) for v in fields.getlist(k)] for k in fields})
    if not boundary:
        raise ApiError(400, "The multipart form has no boundary.", "invalid_form")
    collector = _Collector(max_file_bytes, max_files, max_fields)
    parser = MultipartParser(boundary, collector.callbacks(), max_header_size=MAX_HEADER_BYTES)
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except ApiError:
        raise
    except Exception as exc:
        raise ApiError(
            400, f"Expected a multipart form with 'file' and/or 'request_id' ({exc}).", "invalid_form"
        ) from None
    return collector.form
