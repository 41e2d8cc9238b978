"""`namex-bench selfcheck`: low precision against float32 per method (``numerics``), and the checks a user runs on a new machine (``checks``)."""
