"""What the index holds, as tables and figures: transfer matrices, curves, joins, rows."""
