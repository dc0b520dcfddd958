"""What the API (``service``) and the workers (``worker``) share, and nothing else.

Settings, JSON logging, the queue, the Redis key layout and artifact store, and the typed job,
progress and result records. It imports the core (``odeserve``) but neither app, so neither app
imports the other; it loads no torch and no FastAPI.
"""
