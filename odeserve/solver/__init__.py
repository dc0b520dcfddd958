"""The PINN solver: compile to torch, build the trial function, train, export.

Imports torch; imports no web or queue code.
"""
