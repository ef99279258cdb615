"""Where and with what a report was made, and what pins the study's inputs: versions,
platform, git commit, locations (masked), model weights and evaluation slices."""

from __future__ import annotations

import json
import platform
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from storage import CellRow, __version__, mask_secrets, mask_url
from storage.enums import CellKind

VERSIONED = ("torch", "torchvision", "ray", "mlflow", "sqlalchemy")
GIT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Checkpoint:
    """The weights of one model on one dataset: a train cell's checkpoint or a file's hash."""

    dataset: str
    model: str
    origin: str
    digest: str
    eval_accuracy: float | None = None


@dataclass(frozen=True)
class Environment:
    """Where and with what the report was made, and what pins the study's inputs."""

    versions: dict[str, str]
    platform: str
    git_folder: str
    git_commit: str | None
    db_url: str
    store: str
    checkpoints: list[Checkpoint]
    eval_hashes: dict[str, list[str]]


def environment(
    cells: list[CellRow], *, git_folder: Path, db_url: str, store_root: str
) -> Environment:
    """Versions, platform, git commit, locations, model weights and evaluation slices.

    Args:
        cells: The study's cells (their checkpoints and evaluation slices are listed).
        git_folder: Whose ``git rev-parse HEAD`` is recorded.
        db_url: The index (recorded masked).
        store_root: The artifact store (recorded masked).
    """
    return Environment(
        versions=versions(),
        platform=platform.platform(),
        git_folder=str(git_folder),
        git_commit=git_commit(git_folder),
        db_url=mask_url(db_url),
        store=mask_secrets(store_root),
        checkpoints=checkpoints(cells),
        eval_hashes=eval_hashes(cells),
    )


def versions() -> dict[str, str]:
    """advgrid, Python and the libraries a result depends on (``not installed`` if absent)."""
    out = {"advgrid": _version("advgrid"), "python": platform.python_version()}
    out.update({name: _version(name) for name in VERSIONED})
    return out


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        if dist == "advgrid":  # run from a source tree that was never installed
            return __version__
        return "not installed"


def git_commit(folder: Path) -> str | None:
    """``HEAD`` of the git checkout holding ``folder`` (``+ local changes`` when dirty);
    None when it is none or git is not there."""
    try:
        head = _git(folder, "rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        dirty = _git(folder, "status", "--porcelain", "--untracked-files=no").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    commit = head.stdout.strip()
    return f"{commit} + local changes" if dirty else commit


def _git(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(folder), *args],
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT_S,
        check=False,
    )


def checkpoints(cells: list[CellRow]) -> list[Checkpoint]:
    """Every model's weights per dataset: trained checkpoints, then checkpoint files."""
    out: dict[tuple[str, str], Checkpoint] = {}
    for c in cells:
        spec = json.loads(c.spec_json)
        label = str((spec.get("dataset") or {}).get("label"))
        if c.kind == CellKind.TRAIN and "checkpoint" in c.artifacts:
            model = str(spec["model"]["name"])
            accuracy = c.metrics.get("eval_accuracy")
            defense = ((spec.get("train") or {}).get("defense") or {}).get("name")
            origin = f"trained ({defense})" if defense else "trained"
            out[(label, model)] = Checkpoint(
                label, model, origin, c.artifacts["checkpoint"], accuracy
            )
        for role in ("source", "target"):
            digest = spec.get(f"{role}_checkpoint_sha256")
            if digest:
                model = str(spec[role])
                out.setdefault((label, model), Checkpoint(label, model, "file", digest))
    return sorted(out.values(), key=lambda k: (k.dataset, k.origin == "file", k.model))


def eval_hashes(cells: list[CellRow]) -> dict[str, list[str]]:
    """The evaluation-slice hashes of every dataset (one each unless the slice changed)."""
    out: dict[str, list[str]] = {}
    for c in cells:
        spec = json.loads(c.spec_json)
        if c.kind == CellKind.ATTACK and spec.get("eval_hash"):
            found = out.setdefault(str(spec["dataset"]["label"]), [])
            if spec["eval_hash"] not in found:
                found.append(spec["eval_hash"])
    return out
