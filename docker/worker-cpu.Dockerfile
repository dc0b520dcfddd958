# The CPU worker image (docker compose's default profile): the CPU build of torch, then odeserve.
FROM python:3.11-slim
WORKDIR /app
# The CPU wheel first, from PyTorch's CPU index (an open range from PyPI pulls a CUDA build).
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch>=2.5,<3"
COPY pyproject.toml README.md ./
COPY odeserve ./odeserve
COPY common ./common
COPY service ./service
COPY worker ./worker
RUN pip install --no-cache-dir ".[solver,service]"
COPY docker/entrypoint.sh docker/worker_healthcheck.py ./docker/
ENV MPLCONFIGDIR=/tmp/matplotlib
USER nobody
ENTRYPOINT ["/app/docker/entrypoint.sh"]
CMD ["python", "-m", "odeserve", "worker"]
