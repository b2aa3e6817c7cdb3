"""Spark jobs of u2qt: the nightly tokenization, training-data sampling, backfills, SQL views.

Model math lives in :mod:`u2qt_core`; this package only moves data and calls it.
"""
