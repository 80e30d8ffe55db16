"""Timestamps: read what exports write, decide what they leave open, and never guess silently.

The rules (docs/data-formats.md, "Timestamps"):

- ISO 8601 strings, with any offset (none means UTC), are read as written.
- Numeric dates `a/b/year` (also with `.` or `-`) are day-first or month-first for the whole file. A first field
  above 12 means day-first, a second above 12 month-first; both in one file is an error. When no date decides it,
  `dataset.date_format` does. Left at `auto`, the file is read in the one order under which its messages never
  go back in time while the other order does; when that does not decide either, the file is refused with a
  message naming `dataset.date_format` and `--dayfirst` / `--monthfirst`.
- Numbers are epoch times. The unit (seconds, milliseconds, microseconds, nanoseconds) follows from the magnitude
  of the median value, and is logged.
- Pandas holds timestamps in nanoseconds, which reach from 1677-09-21 to 2262-04-11. A row outside that range is
  dropped and counted (`dropped["date_out_of_range"]`), and logged with its line or field.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloneus.errors import DataFormatError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

logger = logging.getLogger(__name__)

# Whole days inside pandas' nanosecond range (1677-09-21 00:12:43 .. 2262-04-11 23:47:16).
FIRST_DAY = "1677-09-22"
LAST_DAY = "2262-04-11"
# An epoch value below the bound is in that unit: 1e11 s is the year 5138, 1e11 ms is 1973.
EPOCH_UNITS = (("s", 1e11), ("ms", 1e14), ("us", 1e17), ("ns", math.inf))
UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
NUMBER_RE = re.compile(r"\s*[-+]?\d+(?:\.\d+)?\s*")
# 01/11/2004, 1.11.04, 01-11-2004 18:05 ... (a four-digit first field is a year: ISO, handled by pandas).
NUMERIC_DATE = r"^\s*(\d{1,2})[./-](\d{1,2})[./-](\d{4}|\d{2})(?=$|[\sT,])(.*)$"
DATE_SETTING = "set dataset.date_format to 'dayfirst' or 'monthfirst' (or pass --dayfirst / --monthfirst)"
MAX_LOGGED_ROWS = 5
KIND_SAMPLE = 1000

Where = Callable[[int], dict[str, Any]]


@dataclass
class ParsedTimes:
    """Timestamps of one reader's rows.

    Args:
        stamps (`pd.Series`): `datetime64[ns, UTC]`, NaT on the rows that are out of range.
        out_of_range (`np.ndarray`): True on the rows to drop, counted as `dropped["date_out_of_range"]`.
    """

    stamps: pd.Series
    out_of_range: np.ndarray


def describe(where: dict[str, Any]) -> str:
    """'line 12' or "field 'messages[3].timestamp'", as `DataFormatError` writes a location."""
    parts = [f"line {where['line']}"] if where.get("line") is not None else []
    return ", ".join(parts + ([f"field '{where['field']}'"] if where.get("field") is not None else []))


def decide_date_order(
    first: pd.Series,
    second: pd.Series,
    *,
    path: Path,
    raw: pd.Series,
    where: Where,
    date_format: str,
    dates_for: Callable[[str], pd.Series],
) -> str:
    """'dayfirst' or 'monthfirst' for a whole file of numeric dates (the rules are in the module docstring).

    Args:
        first, second (`pd.Series`): the two leading date fields, as ints.
        raw (`pd.Series`): the values as written, for messages; `where(i)` locates value i.
        date_format (`str`): `dataset.date_format`.
        dates_for (`Callable`): the dates read in a given order, to see which order runs forwards in time.

    Raises:
        DataFormatError: the dates contradict each other or the setting, or nothing decides the order.
    """
    evidence = {"dayfirst": (first > 12).to_numpy(), "monthfirst": (second > 12).to_numpy()}
    neither = evidence["dayfirst"] & evidence["monthfirst"]
    if neither.any():
        i = int(neither.argmax())
        raise DataFormatError(path, f"impossible date {raw.iloc[i]!r}: neither field can be a month", **where(i))
    found = {order: int(mask.argmax()) for order, mask in evidence.items() if mask.any()}
    if len(found) == 2:
        i, j = found["dayfirst"], found["monthfirst"]
        raise DataFormatError(
            path,
            f"dates disagree on the day/month order: {raw.iloc[i]!r} is day-first but {raw.iloc[j]!r} "
            f"({describe(where(j))}) is month-first; make the column use one order",
            **where(i),
        )
    if found:
        ((order, i),) = found.items()
        if date_format not in ("auto", order):
            raise DataFormatError(
                path,
                f"{raw.iloc[i]!r} is not a valid {date_format[:-5]}-first date (dataset.date_format: {date_format}); "
                f"the file reads {order[:-5]}-first, so set dataset.date_format: {order}",
                **where(i),
            )
        logger.info("%s: numeric dates read %s-first (%s: %r)", path, order[:-5], describe(where(i)), raw.iloc[i])
        return order
    if date_format != "auto":
        return date_format
    backwards = {order: int((dates_for(order).diff().dt.total_seconds() < 0).sum()) for order in evidence}
    forwards = [order for order, steps in backwards.items() if steps == 0]
    if len(forwards) == 1:
        other = next(o for o in backwards if o != forwards[0])
        logger.info(
            "%s: no date fits only one day/month order; read %s-first, the order in which the messages run forwards "
            "(%s-first would go back in time %d times)",
            path,
            forwards[0][:-5],
            other[:-5],
            backwards[other],
        )
        return forwards[0]
    raise DataFormatError(
        path,
        f"dates such as {raw.iloc[0]!r} read as day-first or month-first alike and no date in the file decides it; "
        + DATE_SETTING,
        **where(0),
    )


def _report_out_of_range(out: np.ndarray, *, path: Path, raw: pd.Series, where: Where) -> None:
    rows = out.nonzero()[0]
    shown = "; ".join(f"{describe(where(int(i)))}: {raw.iloc[i]!r}" for i in rows[:MAX_LOGGED_ROWS])
    logger.warning(
        "%s: dropped %d message(s) dated outside the years 1677-2262, which cannot be represented (%s%s)",
        path,
        len(rows),
        shown,
        "; ..." if len(rows) > MAX_LOGGED_ROWS else "",
    )


def bound_to_range(parsed: pd.Series, *, path: Path, raw: pd.Series, where: Where) -> ParsedTimes:
    """Mark rows outside the nanosecond range (logging where they are) and convert the rest to nanoseconds."""
    import pandas as pd

    parsed = parsed.astype("datetime64[us, UTC]")
    out = ((parsed < pd.Timestamp(FIRST_DAY, tz="UTC")) | (parsed > pd.Timestamp(LAST_DAY, tz="UTC"))).to_numpy()
    if out.any():
        _report_out_of_range(out, path=path, raw=raw, where=where)
    return ParsedTimes(parsed.where(~out).astype("datetime64[ns, UTC]"), out)


def _epoch_unit(numbers: pd.Series) -> str:
    magnitude = float(numbers.abs().median())
    return next(unit for unit, bound in EPOCH_UNITS if magnitude < bound)


def _from_epoch(series: pd.Series, *, path: Path, where: Where, unit: str | None) -> ParsedTimes:
    import pandas as pd

    numbers = pd.to_numeric(series.map(lambda v: v.strip() if isinstance(v, str) else v), errors="coerce")
    if numbers.isna().any():
        bad = int(numbers.isna().to_numpy().argmax())
        raise DataFormatError(path, f"timestamp {series.iloc[bad]!r} is not an epoch number", **where(bad))
    if unit is None:
        unit = _epoch_unit(numbers)
        logger.info("%s: numeric timestamps read as epoch %s (from their magnitude)", path, UNIT_NAMES[unit])
    seconds = numbers * {"s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}[unit]
    first, last = (pd.Timestamp(d, tz="UTC").timestamp() for d in (FIRST_DAY, LAST_DAY))
    out = ((seconds < first) | (seconds > last)).to_numpy()
    if out.any():
        _report_out_of_range(out, path=path, raw=series, where=where)
    stamps = pd.to_datetime(numbers.where(~out), unit=unit, utc=True).astype("datetime64[ns, UTC]")
    return ParsedTimes(stamps, out)


def _is_numeric(series: pd.Series) -> bool:
    """Epoch numbers when most values are numbers (then the others are errors named by `_from_epoch`)."""
    numbers = series.map(
        lambda v: (
            isinstance(v, int | float) and not isinstance(v, bool) or isinstance(v, str) and NUMBER_RE.fullmatch(v)
        )
    )
    return bool(numbers.astype(bool).mean() > 0.5)


def _all_numeric_dates(series: pd.Series) -> bool:
    return bool(series.str.fullmatch(NUMERIC_DATE).fillna(False).astype(bool).all())


def _reorder_numeric_dates(series: pd.Series, *, path: Path, where: Where, date_format: str) -> pd.Series:
    """`a/b/yy[yy] rest` rewritten as ISO `yyyy-mm-dd rest`, in the order the file decides (two-digit years: 20yy)."""
    import pandas as pd

    parts = series.str.extract(NUMERIC_DATE)
    first, second = parts[0].astype(int), parts[1].astype(int)
    year = parts[2].astype(int)
    year = year.where(parts[2].str.len() == 4, year + 2000)

    def day_month(order: str) -> tuple[pd.Series, pd.Series]:
        return (first, second) if order == "dayfirst" else (second, first)

    def dates_for(order: str) -> pd.Series:
        day, month = day_month(order)
        return pd.to_datetime(pd.DataFrame({"year": year, "month": month, "day": day}), errors="coerce")

    order = decide_date_order(
        first, second, path=path, raw=series, where=where, date_format=date_format, dates_for=dates_for
    )
    day, month = day_month(order)
    rest = parts[3].str.replace(r"^,?\s*", " ", regex=True).str.rstrip()
    return (
        year.astype(str).str.zfill(4)
        + "-"
        + month.astype(str).str.zfill(2)
        + "-"
        + day.astype(str).str.zfill(2)
        + rest
    )


def _parse_strings(series: pd.Series, *, path: Path, where: Where) -> pd.Series:
    import pandas as pd

    strings = pd.api.types.is_string_dtype(series.dtype)
    text = series if strings else series.where(series.map(lambda v: isinstance(v, str)), None)
    for fmt in ("ISO8601", "mixed"):
        try:
            return pd.to_datetime(text, utc=True, format=fmt)
        except (ValueError, TypeError, OverflowError):
            continue
    parsed = pd.to_datetime(text, utc=True, format="mixed", errors="coerce")
    bad = int(parsed.isna().to_numpy().argmax())
    raise DataFormatError(
        path,
        f"cannot parse timestamp {series.iloc[bad]!r}; expected ISO 8601 like 2024-01-31T18:05:00+00:00, a date "
        "like 31/01/2024 18:05, or an epoch number",
        **where(bad),
    )


def parse_timestamps(
    values: pd.Series | Sequence[Any],
    *,
    path: str | Path,
    where: Where,
    date_format: str = "auto",
    epoch_unit: str | None = None,
) -> ParsedTimes:
    """Parse one export's timestamp column by the rules of the module docstring.

    Args:
        values (`pd.Series | Sequence`): as written in the export; a Series keeps its index.
        where (`Callable[[int], dict]`): the `line=` / `field=` of value i, for messages.
        date_format (`str`, *optional*, defaults to `"auto"`): `dataset.date_format`.
        epoch_unit (`str`, *optional*): the unit of numeric values when the format fixes it (Telegram: `"s"`).

    Raises:
        DataFormatError: a value is missing or does not parse, or the day/month order cannot be decided.
    """
    import pandas as pd

    path = Path(path)
    series = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
    if series.empty:
        return ParsedTimes(pd.Series(dtype="datetime64[ns, UTC]", index=series.index), series.isna().to_numpy())
    missing = series.isna().to_numpy()
    if missing.any():
        bad = int(missing.argmax())
        raise DataFormatError(path, "timestamp is missing; every message needs one", **where(bad))
    # The kind of column is told from its first values (a Python-level test of every value costs seconds on a
    # million rows); the parse of the whole column then names any value that does not fit.
    head = series.iloc[:KIND_SAMPLE]
    if epoch_unit is not None or _is_numeric(head):
        return _from_epoch(series, path=path, where=where, unit=epoch_unit)
    text = series
    if _all_numeric_dates(head) and _all_numeric_dates(series):
        text = _reorder_numeric_dates(series, path=path, where=where, date_format=date_format)
    parsed = _parse_strings(text, path=path, where=where)
    return bound_to_range(parsed, path=path, raw=series, where=where)
