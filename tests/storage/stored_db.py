"""Stored old databases for the upgrade tests: how they are made and how they are read.

``data/advgrid-0001.sqlite`` is an index written by advgrid at schema revision 0001: the
finished study ``data/stored.yaml``. ``data/advgrid-0001.json`` holds what that advgrid said
about it: ``advgrid results --format json`` and every row of every table.

Run as a script with an older advgrid first on ``PYTHONPATH`` to make such a pair again
(``data/README.md`` has the recipe)::

    PYTHONPATH=/path/to/old/checkout python tests/storage/stored_db.py

The script uses only the command line, the ``alembic_version`` table and reflection, so it
runs with any advgrid version; :func:`dump` is shared with the tests.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, MetaData, create_engine, select, text

DATA = Path(__file__).resolve().parent / "data"
STUDY_FILE = DATA / "stored.yaml"
STUDY = "stored"


def dump(conn: Connection) -> dict[str, list[dict[str, Any]]]:
    """Every row of every advgrid table, by table name, each table ordered by primary key.

    Tables and columns are reflected, so this reads a database at any revision. Times
    become ISO 8601 UTC text (advgrid's SQLite keeps naive UTC, PostgreSQL ``timestamptz``),
    so dumps of the same rows on either backend are equal.
    """
    meta = MetaData()
    meta.reflect(conn)
    tables: dict[str, list[dict[str, Any]]] = {}
    for table in meta.sorted_tables:
        if table.name == "alembic_version":
            continue
        rows = conn.execute(select(table).order_by(*table.primary_key.columns)).mappings()
        tables[table.name] = [{k: _plain(v) for k, v in row.items()} for row in rows]
    return tables


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        utc = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value
        return utc.astimezone(timezone.utc).isoformat()
    return value


def _advgrid(args: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"advgrid {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def make(out: Path = DATA) -> Path:
    """Run the stored study with the advgrid on ``sys.path``; write its database and dump.

    Returns:
        The database file written, ``out/advgrid-<revision>.sqlite``.
    """
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        db_file = root / "advgrid.db"
        env = {
            **os.environ,
            "ADVGRID_DB": f"sqlite:///{db_file}",
            "ADVGRID_STORE": str(root / "store"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        }
        run = ["run", str(STUDY_FILE), "--executor", "inline", "--no-mlflow", "-q"]
        _advgrid(run, env, root)
        results = json.loads(_advgrid(["results", STUDY, "--format", "json"], env, root))
        with sqlite3.connect(db_file) as con:  # everything into the main file, compacted
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            con.execute("VACUUM")
        con.close()
        engine = create_engine(f"sqlite:///{db_file}")
        with engine.connect() as conn:
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
            tables = dump(conn)
        engine.dispose()
        assert not Path(f"{db_file}-wal").exists(), "the WAL was not folded into the file"
        target = out / f"advgrid-{revision}.sqlite"
        shutil.copyfile(db_file, target)
    expected = {
        "revision": revision,
        "study": STUDY,
        "study_file": STUDY_FILE.name,
        "results": results,
        "tables": tables,
    }
    target.with_suffix(".json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    return target


if __name__ == "__main__":
    made = make()
    sys.stdout.write(f"wrote {made} ({made.stat().st_size} bytes) and its .json dump\n")
