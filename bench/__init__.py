"""Benchmarks of odeserve against the PINN peers and scipy (``python -m bench.run``)."""
