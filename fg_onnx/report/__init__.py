"""Standalone HTML reports of a run (``report.html`` beside its results)."""
