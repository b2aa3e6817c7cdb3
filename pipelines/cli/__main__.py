"""``python -m pipelines.cli``: the ``u2qt`` command line."""
from pipelines.cli.main import run

run()
