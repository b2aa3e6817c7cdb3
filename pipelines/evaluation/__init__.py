"""``u2qt paper-eval``: the evaluation worlds end to end, read with Spark."""
