"""The error of bad input files, shared by every reader."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["InputError", "malformed"]


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


#: What parsing code raises on content of a shape it did not expect.
_SHAPE_ERRORS = (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError,
                 RecursionError)


@contextmanager
def malformed(path: str | Path, keep: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """The last net of a reader: an error of an unexpected shape of ``path``'s content
    (``TypeError``, ``KeyError``, ...; the readers name the entry and field of every shape
    they know) becomes an :class:`InputError` naming the file. ``InputError`` and the
    ``keep`` classes (e.g. a spec's own error) pass unchanged."""
    try:
        yield
    except (InputError, *keep):
        raise
    except _SHAPE_ERRORS as e:
        raise InputError(path, f"malformed content ({type(e).__name__}: {e})") from None
