"""The odeserve HTTP service (FastAPI). Never imports torch."""
