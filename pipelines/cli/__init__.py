"""The ``u2qt`` command line."""
