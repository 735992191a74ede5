"""The pieces of the report (report.py orchestrates them): tables, significance, spreadsheet, plots."""
