"""``python -m orchestrator`` is ``advgrid``."""

from orchestrator.cli import main

main()
