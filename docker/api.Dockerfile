# The API image: validation and job access only. No torch (the API never imports it).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY odeserve ./odeserve
COPY common ./common
COPY service ./service
COPY worker ./worker
RUN pip install --no-cache-dir ".[service]"
USER nobody
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["uvicorn", "service.app:app_factory", "--factory", "--host", "0.0.0.0", "--port", "8000"]
