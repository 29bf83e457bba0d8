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
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from app.core.errors import DomainError
from app.core.uploads import Upload

MAX_HEADER_BYTES = 64 * 1024
MAX_FIELD_BYTES = 1024


@dataclass
class Form:
    files: dict[str, list[bytes]] = field(default_factory=dict)
    fields: dict[str, list[str]] = field(default_factory=dict)


class _PartHeaders:
    """Keeps each part's Content-Disposition as python-multipart's callbacks deliver it."""

    def __init__(self) -> None:
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.disposition = b""

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.part_begin,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
            "on_header_field": lambda d, s, e: self.header_field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self.header_value.extend(d[s:e]),
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
        }

    def header_end(self) -> None:
        if bytes(self.header_field).lower() == b"content-disposition":
            self.disposition = bytes(self.header_value)
        self.header_field, self.header_value = bytearray(), bytearray()

    def part_begin(self) -> None:
        self.disposition = b""

    def headers_finished(self) -> None:
        pass

    def part_data(self, data: bytes, start: int, end: int) -> None:
        raise NotImplementedError

    def part_end(self) -> None:
        raise NotImplementedError


class _Collector(_PartHeaders):
    def __init__(self, max_file_bytes: int, max_files: int, max_fields: int) -> None:
        super().__init__()
        self.form = Form()
        self.limits = (max_file_bytes, max_files, max_fields)
        self.data = bytearray()

    def part_begin(self) -> None:
        self.disposition, self.data = b"", bytearray()

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
            raise DomainError("invalid_form", "Every multipart part needs a form-data name.")
        if b"filename" in params:
            self.form.files.setdefault(name, []).append(bytes(self.data))
            if sum(len(v) for v in self.form.files.values()) > max_files:
                raise DomainError("too_many_files", f"Send at most {max_files} files.")
        else:
            if len(self.data) > MAX_FIELD_BYTES:
                raise DomainError("invalid_form", f"The form field '{name}' is too long.")
            self.form.fields.setdefault(name, []).append(self.data.decode("utf-8", "replace"))
            if sum(len(v) for v in self.form.fields.values()) > max_fields:
                raise DomainError("invalid_form", "Too many form fields.")


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
        raise DomainError("body_timeout", f"The request body did not arrive within {timeout_s:g} s.") from None


async def _read_form(request: Request, max_file_bytes: int, max_files: int, max_fields: int) -> Form:
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data":
        try:
            fields = await request.form(max_files=0, max_fields=max_fields)
        except Exception as exc:
            raise DomainError("invalid_form", f"Expected a multipart form ({exc}).") from None
        return Form(fields={k: [str(v) for v in fields.getlist(k)] for k in fields})
    if not boundary:
        raise DomainError("invalid_form", "The multipart form has no boundary.")
    collector = _Collector(max_file_bytes, max_files, max_fields)
    parser = MultipartParser(boundary, collector.callbacks(), max_header_size=MAX_HEADER_BYTES)
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except DomainError:
        raise
    except Exception as exc:
        raise DomainError(
            "invalid_form", f"Expected a multipart form with 'file' and/or 'request_id' ({exc})."
        ) from None
    return collector.form


class _Spooler(_PartHeaders):
    """File parts of field ``file`` written to disk as they arrive; other parts refused."""

    def __init__(self, folder: Path, max_file_bytes: int, max_files: int) -> None:
        super().__init__()
        self.folder, self.max_file_bytes, self.max_files = folder, max_file_bytes, max_files
        self.uploads: list[Upload] = []
        self.fh = None

    def headers_finished(self) -> None:
        kind, params = parse_options_header(self.disposition)
        if kind != b"form-data" or params.get(b"name") != b"file" or b"filename" not in params:
            raise DomainError("invalid_form", "Send each media file as a multipart file part named 'file'.")
        if len(self.uploads) >= self.max_files:
            raise DomainError("too_many_files", f"Send at most {self.max_files} files per request.")
        path = self.folder / f"upload-{len(self.uploads)}"
        name = params[b"filename"].decode("utf-8", "replace")
        self.uploads.append(Upload(name, path, 0))
        self.fh = open(path, "wb")  # noqa: SIM115 - closed at part end or by close()

    def part_data(self, data: bytes, start: int, end: int) -> None:
        upload = self.uploads[-1]
        upload.size += end - start
        if upload.size > self.max_file_bytes:
            raise DomainError("file_too_large", f"A file is larger than {self.max_file_bytes} bytes.")
        self.fh.write(data[start:end])

    def part_end(self) -> None:
        self.close()

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


async def read_uploads(
    request: Request, folder: Path, max_file_bytes: int, max_files: int, timeout_s: float
) -> list[Upload]:
    """The request's ``file`` parts, spooled into ``folder`` chunk by chunk as they arrive:
    400 for any other part or a broken form, 413 past ``max_file_bytes`` (stopped there, not
    read to the end), 408 when no data arrives for ``timeout_s``."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise DomainError("invalid_form", "Expected a multipart form with one or more 'file' parts.")
    spooler = _Spooler(folder, max_file_bytes, max_files)
    parser = MultipartParser(boundary, spooler.callbacks(), max_header_size=MAX_HEADER_BYTES)
    chunks = request.stream().__aiter__()
    try:
        while True:
            try:  # an idle timeout, not a total one: a large file may take long, a stalled one may not
                async with asyncio.timeout(timeout_s):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                break
            parser.write(chunk)
        parser.finalize()
    except TimeoutError:
        raise DomainError("body_timeout", f"The upload stalled for {timeout_s:g} s.") from None
    except DomainError:
        raise
    except Exception as exc:
        raise DomainError("invalid_form", f"Expected a multipart form with one or more 'file' parts ({exc}).") from None
    finally:
        spooler.close()
    if not spooler.uploads:
        raise DomainError("no_file", "Send at least one file part named 'file'.")
    return spooler.uploads
