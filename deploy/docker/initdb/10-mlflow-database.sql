-- Runs once, when the PostgreSQL volume is first initialised: MLflow gets its own database
-- beside advgrid's (POSTGRES_DB), since both keep an Alembic version table.
CREATE DATABASE mlflow;
