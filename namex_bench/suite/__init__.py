"""Suites: the YAML files that say what to run, their validation and their expansion into runs."""
