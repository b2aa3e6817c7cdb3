"""Spark at run time: the one SparkSession builder and progress of long Spark work."""
