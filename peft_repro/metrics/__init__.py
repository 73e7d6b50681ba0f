"""Metrics behind one interface; see `compute`."""
