"""Figures (matplotlib, Agg backend; no display needed)."""
