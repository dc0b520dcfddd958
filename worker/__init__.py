"""The RQ job function and worker entry point. Torch is imported only inside jobs."""
