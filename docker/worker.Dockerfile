# The GPU worker image: torch with CUDA from the PyTorch base image, then odeserve.
# (docker compose: COMPOSE_PROFILES=gpu; the CPU worker is docker/worker-cpu.Dockerfile.)
FROM pytorch/pytorch:2.7.1-cuda12.6-cudnn9-runtime
WORKDIR /app
COPY pyproject.toml README.md ./
COPY odeserve ./odeserve
COPY common ./common
COPY service ./service
COPY worker ./worker
# torch is already installed (CUDA build); the solver extra's range accepts it.
RUN pip install --no-cache-dir ".[solver,service]"
COPY docker/entrypoint.sh docker/worker_healthcheck.py ./docker/
ENV PYTORCH_NVML_BASED_CUDA_CHECK=1 MPLCONFIGDIR=/tmp/matplotlib
USER nobody
ENTRYPOINT ["/app/docker/entrypoint.sh"]
CMD ["python", "-m", "odeserve", "worker"]
