"""A file a client uploaded, spooled to disk by the HTTP layer and handed to a use case."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Upload:
    filename: str | None  # as the client named it (untrusted: only ever sanitised)
    path: Path  # the spooled bytes
    size: int
