# The observer: `observer serve ...` (gunicorn gthread worker, see observer/serve.py).
# Secrets from files (Docker secrets): --node-token-file, --login-token-file, or the
# OBSERVER_NODE_TOKEN_FILE / OBSERVER_LOGIN_TOKEN_FILE environment variables.
# Build from the repository root:  docker build -f docker/observer.Dockerfile -t observer .
# The browser's socket.io client comes from npm (web/package-lock.json), in a build stage.

FROM node:20-slim AS web
WORKDIR /app/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --create-home --uid 10001 observer && mkdir /data && chown observer /data
WORKDIR /app
COPY pyproject.toml README.md ./
COPY actors ./actors
COPY agent ./agent
COPY observer ./observer
COPY examples ./examples
COPY bench ./bench
COPY web ./web
COPY --from=web /app/web/node_modules ./web/node_modules
# editable: the app serves web/ from next to the observer package
RUN pip install --no-cache-dir -e '.[redis]'
USER observer
# 8765: the web UI; 4800: agents that dial out (--listen-agents)
EXPOSE 8765 4800
VOLUME ["/data"]
ENTRYPOINT ["observer"]
CMD ["serve", "--help"]
