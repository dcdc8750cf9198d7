"""What the render caches under state_dir share: how a file is stored, and how the
binary that made an output is identified.

Charts, kustomize builds and Helm output are kept across renders and processes; a
reader may open a file while another render writes it, and an upgraded tool must
not be served what the old one produced.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def store_whole(file: Path, data: bytes) -> None:
    """Written whole then renamed, so a concurrent reader never sees half a file."""
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, file)


def binary_stamp(path: str | None) -> str | None:
    """A binary's size and modification time (an upgrade changes them); None when there
    is none or it cannot be read."""
    if path is None:
        return None
    try:
        found = os.stat(path)
    except OSError:
        return None
    return f"{found.st_size}:{found.st_mtime_ns}"
