"""The plan layer: grid files into cells and manifests, the learning-rate search stage, estimates, simulation.

Imports the scheduler and state layers.
"""
