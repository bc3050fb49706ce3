"""Apache Airflow provider that promotes container images between Amazon ECR registries."""

__version__ = "0.1.0"
