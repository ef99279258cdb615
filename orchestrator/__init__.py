"""advgrid's driver side: study files, runs, views of the index, reports and the CLI."""

VERSION = "0.1.0"
