"""``u2qt eval``: the evaluation worlds end to end, read with Spark."""
