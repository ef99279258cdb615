"""``advgrid submit``: run a study as a Ray job on a cluster's head node.

The study file (and any checkpoint file it names by a path inside its folder) is uploaded
as the job's working directory; the job runs ``advgrid run STUDY --ray-address auto`` on
the head, so the driver lives next to the cluster and a laptop may disconnect. Where
results go is decided on the head: flags given here are forwarded, otherwise the head's
``ADVGRID_DB`` / ``ADVGRID_STORE`` / ``MLFLOW_TRACKING_URI`` or the study's ``storage:``.

A job's entrypoint and working directory are readable by everyone who can list the
cluster's jobs, so a URL carrying a password is refused here: credentials belong in the
head's environment (``PGPASSWORD``, ``~/.pgpass``, the object store's own configuration).
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import AdvgridError
from orchestrator.study.schema import Study
from storage import mask_secrets

FINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


@dataclass(frozen=True)
class Submission:
    job_id: str
    address: str
    entrypoint: str


def entrypoint(study: Study, forwarded: dict[str, str | None], extra: tuple[str, ...]) -> str:
    """The command the job runs on the head."""
    args = ["advgrid", "run", Path(study.path).name, "--ray-address", "auto"]
    for flag, value in forwarded.items():
        if value:
            args += [flag, value]
    return shlex.join([*args, *extra])


def check_no_secrets(study: Study, forwarded: dict[str, str | None]) -> None:
    """Refuse URLs with passwords: the job's entrypoint and files are not secret."""
    for flag, value in forwarded.items():
        if value and mask_secrets(value) != value:
            raise AdvgridError(
                f"{flag} {mask_secrets(value)}: a password in a submitted URL is visible to "
                "everyone who can list the cluster's jobs; leave it out of the URL and set it "
                "on the head instead (PGPASSWORD or ~/.pgpass for PostgreSQL)"
            )
    if study.shareable_text != study.text:
        raise AdvgridError(
            f"{study.path}: the study file holds a URL with a password "
            f"({mask_secrets(study.text).count('***')} found); a submitted study is readable by "
            "everyone who can list the cluster's jobs: remove the password and set it on the "
            "head (PGPASSWORD or ~/.pgpass for PostgreSQL)"
        )


def working_dir(study: Study, into: Path) -> Path:
    """Copy the study file and the checkpoint files inside its folder into ``into``."""
    source = Path(study.path).resolve()
    shutil.copy2(source, into / source.name)
    for path, _sha in study.checkpoints.values():
        file = Path(path).resolve()
        try:
            rel = file.relative_to(source.parent)
        except ValueError:
            continue  # an absolute path outside the study's folder: must exist on the head
        (into / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, into / rel)
    return into


def submit(
    study: Study,
    address: str,
    forwarded: dict[str, str | None],
    extra: tuple[str, ...] = (),
) -> Submission:
    """Submit the study as a Ray job; returns its id. Nothing is sent if a check fails."""
    check_no_secrets(study, forwarded)
    client = _client(address)
    command = entrypoint(study, forwarded, extra)
    job_id = f"advgrid-{study.name}-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="advgrid-submit-") as tmp:
        client.submit_job(
            entrypoint=command,
            submission_id=job_id,
            runtime_env={"working_dir": str(working_dir(study, Path(tmp)))},
            metadata={"advgrid.study": study.name},
        )
    return Submission(job_id, address, command)


def follow(sub: Submission, echo: Callable[[str], None], poll_s: float = 1.0) -> str:
    """Stream the job's log until it ends; returns its final status name."""
    client = _client(sub.address)

    async def tail() -> None:
        async for lines in client.tail_job_logs(sub.job_id):
            echo(lines.rstrip("\n"))

    # the log stream may close early; the status below is what counts
    with contextlib.suppress(Exception):
        asyncio.run(tail())
    while (status := str(client.get_job_status(sub.job_id)).split(".")[-1]) not in FINAL:
        time.sleep(poll_s)
    return status


def _client(address: str):
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as exc:
        text = f"could not reach the Ray job server at {address}: {mask_secrets(str(exc))}"
        if "auth" in str(exc).lower():
            text += (
                "\nThis cluster uses token authentication: run with RAY_AUTH_MODE=token and "
                "the cluster's token in ~/.ray/auth_token (or RAY_AUTH_TOKEN_PATH, or "
                "RAY_AUTH_TOKEN); `ray get-auth-token` on the head prints it."
            )
        raise AdvgridError(text) from exc
