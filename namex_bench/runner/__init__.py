"""The runner and its run records."""
