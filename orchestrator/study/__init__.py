"""The study file: its schema, validation with every problem collected, and the grid plan."""
