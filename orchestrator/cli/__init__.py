"""``advgrid`` command line: thin commands that parse, call one function and render.

:data:`main` is the group (:mod:`orchestrator.cli.app`); each module adds one group of verbs,
with what they share in :mod:`orchestrator.cli.options`.
"""

from orchestrator.cli import (
    attempts_command,
    bundle_commands,
    data_commands,
    list_command,
    min_norm_command,
    report_command,
    run_commands,
    store_commands,
    submit_command,
    view_commands,
)
from orchestrator.cli.app import main

for command in (
    run_commands.run,
    run_commands.plan,
    run_commands.status,
    attempts_command.attempts,
    view_commands.results,
    view_commands.transfer,
    view_commands.curve,
    view_commands.samples,
    view_commands.defenses,
    min_norm_command.min_norm_command,
    report_command.report,
    bundle_commands.export,
    bundle_commands.import_,
    submit_command.submit_cmd,
    list_command.list_,
    store_commands.db,
    store_commands.artifacts,
    data_commands.data,
):
    main.add_command(command)

__all__ = ["main"]
