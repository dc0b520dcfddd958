# The API image: validation, job access, plots and the playground. No torch (the API never
# imports it); matplotlib and numpy draw /jobs/{id}/plot.png from the stored samples.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY odeserve ./odeserve
COPY common ./common
COPY service ./service
COPY worker ./worker
RUN pip install --no-cache-dir ".[service]"
COPY docker/entrypoint.sh ./docker/entrypoint.sh
# Non-root; compose's secrets are bind mounts, readable here when the files are 0444 (make secrets).
USER nobody
ENV MPLCONFIGDIR=/tmp/matplotlib
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
ENTRYPOINT ["/app/docker/entrypoint.sh"]
CMD ["uvicorn", "service.app:app_factory", "--factory", "--host", "0.0.0.0", "--port", "8000"]
