"""How the workbook's sheets look on paper and where long texts wrap (openpyxl).

Neither Excel nor LibreOffice fits a row's height to wrapped text in a merged cell, nor always to a
wrapped cell the file gives no height for: the heights are estimated here from the text and the
column widths (in characters, the unit of openpyxl's column widths).
"""

from __future__ import annotations

import math
import textwrap

from openpyxl.styles import Alignment
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.page import PageMargins

LINE_HEIGHT = 15.0  # points per line of 11 pt text, Excel's default row height
# Characters of text per character of column width (the width of a digit): text averages narrower
# than digits, but less so in the fonts a viewer may put in Calibri's place; a little low, so that
# an estimate errs towards a spare line rather than a hidden one.
CHARACTERS_PER_WIDTH = 1.1
NOTE_WIDTH = 110  # characters: a note wraps to lines about this long, readable without scrolling
DEFAULT_WIDTH = 8.43  # Excel's width of a column the file gives none for
FOOTER = "&A, page &P of &N"  # sheet name, page number, page count
# Characters of column width a landscape page holds at about 57 % (A4 or Letter: about 125 at 100 %).
# A wider sheet is fitted to several pages across rather than shrunk unreadably small (a 45-column
# summary fitted to one page prints at about 25 %), its first columns repeated on each.
PAGE_WIDTH = 220


def print_setup(ws, title_rows: str | None = None, last_row: int | None = None,
                last_column: int | None = None, title_columns: str | None = None, across: int | None = None) -> None:
    """Landscape pages, as many across as keep the text readable (PAGE_WIDTH) and as many down as it
    takes; the header rows `title_rows` ('1:2') repeated on every page, and the columns
    `title_columns` ('A:C') on every page across; the used range (or up to `last_row`, `last_column`
    where images reach beyond the cells) as print area; the sheet and page in the footer. `across`
    sets the pages across (1 for images laid out to a page's width)."""
    last_column = last_column or ws.max_column
    across = across or pages_across(ws, last_column)
    ws.page_setup.orientation = "landscape"
    ws.sheet_properties.pageSetUpPr.fitToPage = True
    ws.page_setup.fitToWidth, ws.page_setup.fitToHeight = across, 0  # 0: no limit on the pages down
    ws.page_margins = PageMargins(left=0.4, right=0.4, top=0.5, bottom=0.6, header=0.25, footer=0.25)
    if title_rows:
        ws.print_title_rows = title_rows
    if title_columns and across > 1:
        ws.print_title_cols = title_columns
    ws.print_area = f"A1:{get_column_letter(last_column)}{last_row or ws.max_row}"
    ws.oddFooter.center.text = FOOTER


def pages_across(ws, last_column: int) -> int:
    """Pages across for columns 1..`last_column` at a readable scale."""
    width = sum(column_width(ws, column) for column in range(1, last_column + 1))
    return max(1, math.ceil(width / PAGE_WIDTH))


def column_width(ws, column: int) -> float:
    dimension = ws.column_dimensions.get(get_column_letter(column))  # .get: adds no column to the file
    return dimension.width if dimension is not None and dimension.width else DEFAULT_WIDTH


def line_count(text: str, width: float) -> int:
    """Lines `text` takes wrapped in `width` characters of column width (at word boundaries, as
    spreadsheets wrap)."""
    per_line = max(1, math.floor(width * CHARACTERS_PER_WIDTH))
    return sum(max(1, len(textwrap.wrap(part, per_line))) for part in str(text).split("\n"))


def wrap_row(ws, row: int, first_column: int = 1) -> None:
    """Wrap the texts of `row` (from `first_column`) in their columns, the row as tall as its longest;
    every value of the row at its top."""
    lines = 1
    for c in ws[row]:
        wrap = c.column >= first_column and isinstance(c.value, str)
        c.alignment = Alignment(wrap_text=wrap, vertical="top")
        if wrap:
            lines = max(lines, line_count(c.value, column_width(ws, c.column)))
    ws.row_dimensions[row].height = lines * LINE_HEIGHT


def wrapped_note(ws, row: int, text: str, font, width: float = NOTE_WIDTH, last_column: int | None = None) -> None:
    """`text` in column A of `row`, merged across as many columns as make about `width` characters
    (never beyond `last_column`), wrapped, the row as tall as its lines."""
    last_column = last_column or ws.max_column
    end, total = 1, column_width(ws, 1)
    while total < width and end < last_column:
        end += 1
        total += column_width(ws, end)
    target = ws.cell(row=row, column=1, value=text)
    target.font = font
    target.alignment = Alignment(wrap_text=True, vertical="top")
    if end > 1:
        ws.merge_cells(start_row=row, start_column=1, end_row=row, end_column=end)
    ws.row_dimensions[row].height = line_count(text, total) * LINE_HEIGHT


def text_reach(ws, row: int, column: int = 1) -> int:
    """The last column the unwrapped text of (row, column) shows in, spilling over empty cells to
    its right: a print area must reach it, or the text is cut where the page ends."""
    length = len(str(ws.cell(row=row, column=column).value or ""))  # bold titles too: a character a width
    total = column_width(ws, column)
    while total < length:
        column += 1
        total += column_width(ws, column)
    return column
