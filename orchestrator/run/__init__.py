"""Running a plan: the driver loop, leases, executors, MLflow tracking and cluster jobs."""
