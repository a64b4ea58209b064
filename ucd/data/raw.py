"""The raw, reader-independent form of a dataset, and careful delimited-file reading.

Readers return :class:`RawData`: an ``interactions`` frame with columns ``user``, ``item``
(both Int64 or both-kinds String), ``timestamp`` (Int64; an order column where the data has
no clock) and ``rating`` (Float32, nullable), in file order (file order is the tie-break for
equal timestamps), and an ``items`` frame with ``item``, ``title``, ``text`` and optional
fields. Preprocessing turns this into the canonical tables of :mod:`ucd.schema`.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from ucd.errors import DataError


@dataclass
class RawData:
    interactions: pl.DataFrame
    items: pl.DataFrame
    has_timestamps: bool = True
    inputs: list[Path] = field(default_factory=list)  # files read, for the fingerprint


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: file not found ({what})")
    return path


def find_file(folder: Path, names: list[str], what: str) -> Path:
    """The first of ``names`` present in ``folder``; the error lists every name tried."""
    for n in names:
        if (folder / n).is_file():
            return folder / n
    raise DataError(f"{folder}: none of {names} found ({what})")


def open_text(path: Path, encoding: str = "utf-8") -> io.TextIOBase:
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115 (the caller closes the wrapper)
    return io.TextIOWrapper(raw, encoding=encoding, newline="")


_CASTS: dict[pl.DataType, Callable[[str], object]] = {
    pl.Int64: int,
    pl.Int32: int,
    pl.Float32: float,
    pl.Float64: float,
    pl.Utf8: str,
}


def _locate_bad_line(
    path: Path,
    sep: str,
    names: list[str],
    dtypes: dict[str, pl.DataType],
    header: bool,
    encoding: str,
) -> str:
    """Slow path, only taken after the fast reader found a problem: name the first bad line."""
    with open_text(path, encoding) as f:
        for lineno, line in enumerate(f, start=1):
            if header and lineno == 1:
                continue
            line = line.rstrip("\r\n")
            parts = line.split(sep)
            if len(parts) != len(names):
                return f"{path}:{lineno}: expected {len(names)} fields, found {len(parts)}: {line[:80]!r}"
            for name, value in zip(names, parts, strict=True):
                cast = _CASTS.get(dtypes.get(name, pl.Utf8), str)
                try:
                    cast(value)
                except ValueError:
                    return f"{path}:{lineno}: field '{name}' = {value!r} is not a valid {dtypes[name]}"
    return f"{path}: could not parse (no single bad line found)"


def _utf8_source(path: Path, sep: str, encoding: str) -> tuple[Path | io.BytesIO, str]:
    """(what the columnar reader can read, its one-character separator); see read_delimited."""
    if len(sep) <= 1 and encoding.lower().replace("-", "") in ("utf8",) and path.suffix != ".gz":
        return path, sep
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    text = data.decode(encoding)
    eff_sep = sep
    if len(sep) > 1:
        eff_sep = "\x1f"
        text = text.replace(sep, eff_sep)
    return io.BytesIO(text.encode("utf-8")), eff_sep


def _named_columns(df: pl.DataFrame, names: list[str], path: Path) -> pl.DataFrame:
    """The columns ``names`` of a headed file, in that order."""
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; header has {df.columns}")
    return df.select(names)


def _typed(df: pl.DataFrame, names: list[str], dtypes: dict[str, pl.DataType]) -> pl.DataFrame:
    """String columns cast to their types; a value that does not parse becomes null."""
    casts = []
    for name in names:
        dt = dtypes.get(name, pl.Utf8)
        casts.append(
            pl.col(name).str.strip_chars().cast(dt, strict=False).alias(name)
            if dt != pl.Utf8
            else pl.col(name)
        )
    return df.select(casts)


def _has_unparsed(
    df: pl.DataFrame, out: pl.DataFrame, names: list[str], dtypes: dict[str, pl.DataType]
) -> bool:
    """Whether a typed column holds a null: a value that failed to parse, or an empty field."""
    for name in names:
        if dtypes.get(name, pl.Utf8) == pl.Utf8:
            continue
        n_bad = (out[name].is_null() & df[name].is_not_null()).sum() + df[name].is_null().sum()
        if n_bad:
            return True
    return False


def read_delimited(
    path: Path,
    names: list[str],
    dtypes: dict[str, pl.DataType],
    sep: str,
    header: bool = False,
    encoding: str = "utf-8",
) -> pl.DataFrame:
    """Read a headerless (or headed) delimited file fast, with line-precise errors.

    Multi-character separators (MovieLens' ``::``) and non-UTF-8 encodings are normalised in
    memory first, since the columnar reader handles neither.
    """
    require_file(path, "delimited data")
    source, eff_sep = _utf8_source(path, sep, encoding)
    try:
        df = pl.read_csv(
            source,
            separator=eff_sep,
            has_header=header,
            new_columns=names if not header else None,
            infer_schema=False,
            quote_char=None,
        )
    except (pl.exceptions.ComputeError, pl.exceptions.ShapeError) as e:
        raise DataError(_locate_bad_line(path, sep, names, dtypes, header, encoding)) from e
    if header:
        df = _named_columns(df, names, path)
    elif df.width != len(names):
        raise DataError(_locate_bad_line(path, sep, names, dtypes, header, encoding))
    out = _typed(df, names, dtypes)
    if _has_unparsed(df, out, names, dtypes):
        raise DataError(_locate_bad_line(path, sep, names, dtypes, header, encoding))
    return out


def iter_records(path: Path, parse: Callable[[str], dict]) -> Iterator[tuple[int, dict]]:
    """(line number, record) for each non-empty line; a bad line raises with file:line."""
    require_file(path, "records")
    with open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = parse(line)
            except Exception as e:
                raise DataError(f"{path}:{lineno}: cannot parse record: {e}") from e
            if not isinstance(rec, dict):
                raise DataError(f"{path}:{lineno}: expected a record (mapping), got {type(rec).__name__}")
            yield lineno, rec


def join_text(fields: list[tuple[str, object]], sep: str = " | ") -> str:
    """The item's serialised metadata for prompts: ``Label: value`` for each non-empty field."""
    parts = []
    for label, value in fields:
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value if v not in (None, ""))
        value = str(value).strip()
        if value:
            parts.append(f"{label}: {value}")
    return sep.join(parts)
