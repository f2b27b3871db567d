"""Reading text files (plain or gzipped) with errors that name the file and line."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

from ..errors import TransformerMTError

log = logging.getLogger(__name__)


def decode_line(raw: bytes, where: str, number: int) -> str:
    """Decode one line of bytes as UTF-8; strip the newline (\\n or \\r\\n) and, on
    line 1, the byte-order mark some Windows editors write."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TransformerMTError(
            f"{where}:{number}: invalid UTF-8 at byte {exc.start} of the line"
        ) from None
    if number == 1:
        text = text.removeprefix("\ufeff")
    return text.rstrip("\n").rstrip("\r")


def read_lines(path: str | Path) -> list[str]:
    """All lines of a UTF-8 text file (.gz read transparently), without newlines.

    A final line without a newline is kept; Windows line endings are accepted.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            return [decode_line(raw, str(path), n) for n, raw in enumerate(handle, 1)]
    except FileNotFoundError:
        raise TransformerMTError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TransformerMTError(
            f"{path}: is a directory, expected a text file"
        ) from None
    except PermissionError:
        raise TransformerMTError(f"{path}: permission denied") from None
    except (gzip.BadGzipFile, EOFError) as exc:
        raise TransformerMTError(f"{path}: corrupt gzip file ({exc})") from None


def read_parallel(src_path: str | Path, tgt_path: str | Path) -> tuple[list, list]:
    """Read two line-aligned files and check they have the same number of lines."""
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise TransformerMTError(
            f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}: "
            "parallel files must have one sentence per line, line for line"
        )
    return src, tgt
