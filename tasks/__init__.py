"""Worker side of advgrid: components and ``run_cell``."""
