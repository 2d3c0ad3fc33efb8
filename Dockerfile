# botkeeper in a container: the supervisor runs as PID 1 (outer-supervisor mode "container"):
# it reaps orphans, stops every component gracefully on SIGTERM, and Docker restarts it.
#   docker build -t botkeeper .
#   docker run -d --name bot --restart unless-stopped --env-file .env -p 8080:8080 \
#     -v botkeeper-data:/app/data -v botkeeper-logs:/app/logs botkeeper
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BOTKEEPER_HOME=/app \
    BOTKEEPER_OUTER=container \
    HOST=0.0.0.0 \
    PORT=8080

WORKDIR /app

# run_24_7.sh is not used in a container, but `start --detach` (and flock) stay available.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends util-linux \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 --user-group botkeeper

# Dependencies in their own layer: a code change does not reinstall them.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY --chown=10001:10001 . .
RUN mkdir -p /app/logs /app/data /app/run && chown -R 10001:10001 /app/logs /app/data /app/run

USER 10001:10001
VOLUME ["/app/data", "/app/logs"]
EXPOSE 8080
STOPSIGNAL SIGTERM
# Needs no curl: python's urllib asks /health and exits 0 only on 200.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-m", "botkeeper", "probe"]
CMD ["python", "-m", "botkeeper", "start"]
