# One demo node: the demo system with its agent (python -m observer.demo.node).
# The demo system ships in the observer's wheel (supervision-observer), which this image installs.
# Build from the repository root:  docker build -f docker/demo.Dockerfile -t observer-demo .
# Configured by environment variables (see observer/demo/node.py and docs/protocol.md §13-14):
# OBSERVER_AGENT_BIND or OBSERVER_DIAL, OBSERVER_AGENT_TOKEN_FILE, OBSERVER_AGENT_READ_TOKEN_FILE, ...

FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY actors ./actors
COPY agent ./agent
COPY observer ./observer
COPY web ./web
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --create-home --uid 10001 node
COPY --from=wheel /dist /dist
RUN pip install --no-cache-dir /dist/*.whl && rm -rf /dist
USER node
WORKDIR /home/node
ENTRYPOINT ["python", "-m", "observer.demo.node"]
