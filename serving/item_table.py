"""Which items the item pipeline has encoded: the ids of its item table, read a file
at a time.

``rtp items`` writes ``<out>/items/items-<uuid>.parquet``, one file per bundle, each
written once and never changed. So a reader lists the directory and reads only the
files it has not read before: a refresh costs one listing plus the new files, however
long the table grows. A file that cannot be read yet (being written, its footer not
there) is read again on the next call.
"""

from __future__ import annotations

import logging
from pathlib import Path

LOG = logging.getLogger(__name__)
SUFFIX = ".parquet"
COLUMNS = ("item_id", "upload_ms", "encoded_at_ms")


def _filesystem(path: str):
    """pyarrow's filesystem and root of a local path or URI (``gs://…``)."""
    from pyarrow import fs

    if "://" not in path:
        path = str(Path(path).resolve())
    return fs.FileSystem.from_uri(path)


class ItemTableReader:
    """The item table under ``directory``; ``read_new`` returns the items of the
    files not read before. Not thread-safe: one refresh thread owns it."""

    def __init__(self, directory: str) -> None:
        if not directory:
            raise ValueError("directory: the item table directory is required")
        self.directory = directory
        self._read: set[str] = set()

    def read_new(self) -> dict[str, int]:
        """``{item_id: upload time}`` (epoch ms; the encoding time for an item
        published without one) of the files not read before. A missing directory
        (no upload yet) is no item."""
        import pyarrow.parquet as pq
        from pyarrow import ArrowInvalid, fs

        filesystem, root = _filesystem(self.directory)
        listing = filesystem.get_file_info(fs.FileSelector(root, allow_not_found=True))
        paths = sorted(
            i.path
            for i in listing
            if i.type == fs.FileType.File and i.path.endswith(SUFFIX) and i.path not in self._read
        )
        found: dict[str, int] = {}
        for path in paths:
            try:
                table = pq.read_table(path, filesystem=filesystem, columns=list(COLUMNS))
            except (OSError, ArrowInvalid) as e:  # still being written: next time
                LOG.debug("item table file %s not readable yet: %s", path, e)
                continue
            self._read.add(path)
            rows = table.to_pydict()
            for item, upload, encoded in zip(*(rows[c] for c in COLUMNS), strict=True):
                found[item] = max(found.get(item, 0), int(upload or encoded or 0))
        return found
