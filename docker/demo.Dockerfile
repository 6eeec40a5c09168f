# One demo node: the demo system with its agent (python -m examples.cluster_node).
# Standard library only (actors, agent and examples need no packages).
# Build from the repository root:  docker build -f docker/demo.Dockerfile -t observer-demo .
# Configured by environment variables (see examples/cluster_node.py and docs/protocol.md §13-14):
# OBSERVER_AGENT_BIND or OBSERVER_DIAL, OBSERVER_AGENT_TOKEN_FILE, OBSERVER_AGENT_READ_TOKEN_FILE, ...

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PYTHONPATH=/app
RUN useradd --create-home --uid 10001 node
WORKDIR /app
COPY actors ./actors
COPY agent ./agent
COPY examples ./examples
USER node
ENTRYPOINT ["python", "-m", "examples.cluster_node"]
