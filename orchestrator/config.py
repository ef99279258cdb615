"""Where results go: flag > environment > study file > defaults under ``./.advgrid/``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DIR = ".advgrid"
ENV_DB, ENV_STORE, ENV_MLFLOW = "ADVGRID_DB", "ADVGRID_STORE", "MLFLOW_TRACKING_URI"


@dataclass(frozen=True)
class Settings:
    """Resolved locations of the SQL index, the artifact store and the MLflow store."""

    db_url: str
    store_root: str
    mlflow_uri: str
    mlflow_artifacts: str


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def resolve(
    *,
    db: str | None = None,
    store: str | None = None,
    mlflow_uri: str | None = None,
    study_storage: object | None = None,
    base: Path | None = None,
) -> Settings:
    """Pick each location from the first of: flag, environment, study file, default."""
    base = base or Path.cwd()
    data_dir = base / DEFAULT_DIR

    def pick(flag: str | None, env: str, attr: str) -> str | None:
        return flag or os.environ.get(env) or getattr(study_storage, attr, None)

    db_url = pick(db, ENV_DB, "db") or _sqlite_url(data_dir / "advgrid.db")
    store_root = pick(store, ENV_STORE, "store") or str(data_dir)
    if "://" not in store_root:
        store_root = str(Path(store_root).expanduser().resolve())
    tracking = pick(mlflow_uri, ENV_MLFLOW, "mlflow_uri") or _sqlite_url(data_dir / "mlflow.db")
    return Settings(
        db_url=db_url,
        store_root=store_root,
        mlflow_uri=tracking,
        mlflow_artifacts=str((data_dir / "mlartifacts").resolve()),
    )
