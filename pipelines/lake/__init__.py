"""The lake: every Delta table's declaration, its generation, views over it, the SQL catalog, locks."""
