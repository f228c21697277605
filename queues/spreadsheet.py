"""CSV for spreadsheets, shared by every CSV the dashboard streams (the audit log, message exports).

A spreadsheet runs a cell starting with =, +, -, @ (or a tab or carriage return before one) as a
formula: a payload like `=HYPERLINK("http://evil", "click")` must arrive as text, so such cells get
a leading apostrophe, which spreadsheets read as "this is text" and do not show.
"""

from __future__ import annotations

import csv

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value) -> str:
    text = "" if value is None else value if isinstance(value, str) else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


class _Echo:
    """A file whose write() hands the line back, so csv.writer yields lines for a streaming response."""

    def write(self, value: str) -> str:
        return value


def line_writer():
    """A csv.writer whose writerow() returns the CSV line instead of writing it anywhere."""
    return csv.writer(_Echo())
