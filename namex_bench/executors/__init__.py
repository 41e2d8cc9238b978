"""Executors: *where* a suite's runs execute — worker processes on this machine, or a SLURM
cluster — through submitit.

The runner decides which runs are pending and how a run is executed and recorded
(:func:`~namex_bench.runner.runner.execute_and_record`); an executor only places runs: a
run executed anywhere writes the same record. ``submit.py`` groups pending runs into jobs
and submits them, ``job.py`` is what a job runs, ``status.py`` tells what is done, failed,
running, queued and pending.
"""
