# The observer: `observer serve ...` (gunicorn gthread worker, see observer/cli/serve.py).
# Secrets from files (Docker secrets): --node-token-file, --login-token-file, or the
# OBSERVER_NODE_TOKEN_FILE / OBSERVER_LOGIN_TOKEN_FILE environment variables.
# Build from the repository root:  docker build -f docker/observer.Dockerfile -t observer .
# The image installs the built wheel (supervision-observer), not a checkout: the wheel
# carries the templates, static files, the socket.io client (from npm, built in the first
# stage) and the demo system.

FROM node:20-slim AS web
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error

FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY actors ./actors
COPY agent ./agent
COPY observer ./observer
COPY web ./web
COPY --from=web /src/web/node_modules ./web/node_modules
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --create-home --uid 10001 observer && mkdir /data && chown observer /data
COPY --from=wheel /dist /dist
RUN pip install --no-cache-dir "$(ls /dist/*.whl)[redis,postgresql,mcp]" && rm -rf /dist
USER observer
WORKDIR /home/observer
# 8765: the web UI; 4800: agents that dial out (--listen-agents)
EXPOSE 8765 4800
VOLUME ["/data"]
ENTRYPOINT ["observer"]
CMD ["serve", "--help"]
