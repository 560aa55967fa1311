"""The error of bad input files, shared by every reader."""

from __future__ import annotations

from pathlib import Path

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad input: the message names the file, the entry index and the field."""

    def __init__(self, path: str | Path, message: str, index: int | None = None,
                 field_name: str | None = None) -> None:
        where = str(path)
        if index is not None:
            where += f": entry {index}"
        if field_name is not None:
            where += f": field '{field_name}'"
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.index = index
        self.field = field_name
