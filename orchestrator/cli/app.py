"""The ``advgrid`` group: its help, version and log level. The commands are added to it by
:mod:`orchestrator.cli`."""

from __future__ import annotations

import logging

import click

from storage import __version__, mask_secrets


class MaskingFormatter(logging.Formatter):
    """Masks every URL password in a log line, its traceback included."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(__version__, prog_name="advgrid")
def main(verbose: int) -> None:
    """Adversarial-robustness studies as resumable grids.

    A study file names datasets, models, defenses and attacks; advgrid trains the models,
    attacks every source, evaluates every adversarial set on every target, records each cell
    in a SQL index and MLflow, and resumes where it stopped when run again.

    \b
    Examples:
      advgrid run examples/quickstart.yaml
      advgrid status quickstart
      advgrid transfer quickstart --attack pgd --eps 0.1
    """
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    handler = logging.StreamHandler()
    handler.setFormatter(MaskingFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    for noisy in ("alembic", "mlflow", "urllib3", "ray"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
