"""The round log's envelopes on disk: one append-only file per round.

Every accepted round message is served to auditors for the last ``--log-keep`` rounds
(coordinator.roundlog), so its signed envelope must be kept. As a BLOB in SQLite each one
cost the coordinator's event loop about 1.2 ms of CPU per 400 KB (a SecAgg+ masked
vector of 100,000 values): written to the WAL, copied again at the checkpoint, spread
over overflow pages. Appended to a file it costs about 0.1 ms. The database keeps each
message's row (digest, sender, domain, size) and where its envelope lies in its round's
file (``wire_at``); a whole round is forgotten by deleting one file.

Writes go straight to the operating system (no buffering in this process), so a
coordinator killed after a message was acked has its envelope on disk as it has the row;
like the database in WAL mode with ``synchronous=NORMAL``, a power cut may lose the
last ones. Readers check nothing here: the digests are in the signed record, and an
auditor hashes what it is served.
"""

from __future__ import annotations

import os
from pathlib import Path

SUFFIX = ".env"


class Segments:
    """Envelopes by (round, offset, size) in ``folder``, a file per round."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = None  # the file being appended to, of round ``_round``
        self._round = -1

    def _path(self, round: int) -> Path:
        return self.folder / f"{round}{SUFFIX}"

    def append(self, round: int, wire: bytes) -> int:
        """Append ``wire`` to round ``round``'s file; return its offset there."""
        if round != self._round or self._fd is None:
            self.close()
            self._fd = os.open(self._path(round), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._round = round
        offset = os.fstat(self._fd).st_size
        view = memoryview(wire)
        while view:
            view = view[os.write(self._fd, view):]
        return offset

    def read(self, round: int, offset: int, size: int) -> bytes | None:
        """The ``size`` bytes at ``offset`` in round ``round``'s file; None when they are
        not there (the round forgotten, or the file cut short)."""
        try:
            with open(self._path(round), "rb") as f:
                f.seek(offset)
                data = f.read(size)
        except FileNotFoundError:
            return None
        return data if len(data) == size else None

    def drop_before(self, before: int) -> None:
        """Delete the files of rounds numbered below ``before``."""
        if self._round < before:
            self.close()
        for path in self.folder.glob(f"*{SUFFIX}"):
            stem = path.name[:-len(SUFFIX)]
            if stem.isdigit() and int(stem) < before:
                path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd, self._round = None, -1
