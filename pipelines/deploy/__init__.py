"""Deployment: spark-submit entry point, Airflow DAG builder and in-process runner, the demo."""
