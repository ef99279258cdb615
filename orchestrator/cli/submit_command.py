"""``advgrid submit``: a study as a Ray job on a cluster's head."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator.cli.options import err, user_errors
from orchestrator.run.submit import follow, submit
from orchestrator.study import loader


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("study_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--address",
    envvar="RAY_API_SERVER_ADDRESS",
    required=True,
    metavar="URL",
    help="The cluster's job server, http://HEAD:8265 [env RAY_API_SERVER_ADDRESS].",
)
@click.option("--db", default=None, metavar="URL", help="Forwarded to the job (no password).")
@click.option("--store", default=None, metavar="PATH", help="Forwarded: a path every node sees.")
@click.option("--mlflow-uri", default=None, metavar="URL", help="Forwarded to the job.")
@click.option("--no-wait", is_flag=True, help="Return once submitted; do not stream the log.")
@click.argument("run_args", nargs=-1, type=click.UNPROCESSED)
def submit_cmd(
    study_file: Path,
    address: str,
    db: str | None,
    store: str | None,
    mlflow_uri: str | None,
    no_wait: bool,
    run_args: tuple[str, ...],
) -> None:
    """Run STUDY_FILE as a Ray job on the cluster at --address.

    The study is validated here, then uploaded with the checkpoint files inside its folder;
    on the head the job runs `advgrid run STUDY --ray-address auto` plus RUN_ARGS. Results
    go where the head says (its ADVGRID_DB, ADVGRID_STORE, MLFLOW_TRACKING_URI or the
    study's storage:) unless --db/--store/--mlflow-uri are given; every node must see the
    same store. Passwords in URLs are refused: set them on the head. Streams the job's log
    and exits with its outcome (0 succeeded); Ctrl-C stops following, not the job.

    \b
    Examples:
      advgrid submit study.yaml --address http://head:8265
      advgrid submit study.yaml --address http://head:8265 --no-wait
      advgrid submit study.yaml --address http://head:8265 \\
          --db postgresql://lab@dbhost/advgrid --store /nfs/advgrid -- --max-inflight 64
    """
    with user_errors():
        study = loader.load(study_file)
        forwarded = {"--db": db, "--store": store, "--mlflow-uri": mlflow_uri}
        sub = submit(study, address, forwarded, run_args)
        err.print(f"submitted job [bold]{sub.job_id}[/] to {address}: {sub.entrypoint}")
        if not any(forwarded.values()) and study.file.storage is None:
            err.print(
                "[yellow]note:[/] no --db/--store given and the study has no storage: — the "
                "job uses the head's ADVGRID_DB and ADVGRID_STORE, else a folder inside its "
                "working directory that Ray deletes with the job"
            )
        if no_wait:
            err.print(f"follow it with: ray job logs --address {address} --follow {sub.job_id}")
            return
        try:
            status = follow(sub, lambda line: click.echo(line))
        except KeyboardInterrupt:
            err.print(f"stopped following; the job goes on. Stop it: ray job stop {sub.job_id}")
            raise click.exceptions.Exit(130) from None
    err.print(f"job {sub.job_id}: {status}")
    if status != "SUCCEEDED":
        raise click.exceptions.Exit(1)
