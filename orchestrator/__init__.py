"""advgrid's driver side: study files, runs, views of the index, reports and the CLI.

Its modules import nothing from this ``__init__`` (``tests/test_structure.py``); the version
is :data:`storage.__version__`, read once from the package metadata.
"""
