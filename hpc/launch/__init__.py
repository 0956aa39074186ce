"""Submitting cells: refusals before submission, submitit's executors, the callables they run, code snapshots.

Imports the state and scheduler layers (and the plan layer's types); the user's verbs (``hpc.sweep``) sit above it.
"""
