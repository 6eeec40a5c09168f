"""docker/: no Docker engine runs here, so the containers' command lines run as
plain processes: each service's ENTRYPOINT (from its Dockerfile) plus its
``command`` and ``environment`` (from docker/compose.yaml), with the
container's world mapped onto the test's -- ``/run/secrets/NAME`` to files
made here, the ``observer`` host name and the ports to free loopback ports,
``/data`` to a temporary directory. Nothing else of the command lines changes.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.observer import wait_for
from tests.observer.nodes import clean_env, env_map, free_port, login, read_line, stop_process

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return data


def _dockerfile(service: dict[str, Any]) -> Path:
    build = service["build"]
    return (DOCKER / build["context"] / build["dockerfile"]).resolve()


def _entrypoint(dockerfile: Path) -> list[str]:
    m = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", dockerfile.read_text(), re.M)
    assert m, f"{dockerfile} has no exec-form ENTRYPOINT"
    out: list[str] = json.loads(m.group(1))
    return out


def test_dockerfiles_copy_what_exists_and_the_compose_file_is_complete() -> None:
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"observer", "node-1", "node-2", "node-3"}
    for name, svc in services.items():
        dockerfile = _dockerfile(svc)
        assert dockerfile.is_file(), name
        for src in re.findall(r"^COPY\s+(?!--from)(.+?)\s+\S+\s*$", dockerfile.read_text(), re.M):
            for part in src.split():
                assert (ROOT / part).exists(), f"{dockerfile.name}: COPY {part} does not exist"
        for secret in svc.get("secrets", []):
            assert secret in compose["secrets"], f"{name}: undeclared secret {secret}"
        assert "cluster" in svc["networks"]
    assert compose["networks"]["cluster"]["internal"] is True
    assert all(p.startswith("127.0.0.1:") for p in services["observer"]["ports"])  # the host's loopback only
    # tokens only through secrets: never in a command line or a plain environment value
    for svc in services.values():
        assert not any("token" in a.lower() and "/run/secrets/" not in a for a in svc.get("command", []) if "=" in a)
        for k, v in env_map(svc.get("environment")).items():
            assert "TOKEN" not in k or (k.endswith("_FILE") and v.startswith("/run/secrets/")), k


def test_the_images_install_the_built_wheel_not_a_checkout() -> None:
    for name in ("observer.Dockerfile", "demo.Dockerfile"):
        text = (DOCKER / name).read_text()
        assert re.search(r"^RUN pip wheel .*--no-deps --wheel-dir /dist \.$", text, re.M), name
        assert re.search(r"^RUN .*pip install --no-cache-dir .*/dist/\*\.whl", text, re.M), name
        assert " -e " not in text and "PYTHONPATH" not in text, name
        final = text[text.rindex("\nFROM ") :]  # the image that runs: the wheel only, no sources
        assert not re.search(r"^COPY (?!--from=wheel /dist)", final, re.M), name


def _container_argv(argv: list[str], mapping: dict[str, str]) -> list[str]:
    out = []
    for a in argv:
        for old, new in mapping.items():
            a = a.replace(old, new)
        out.append(a)
    return out


def test_the_compose_entrypoints_run_an_observer_with_three_dialling_nodes(tmp_path: Path) -> None:
    compose = _compose()
    services = compose["services"]
    secret_dir = tmp_path / "secrets"
    secret_dir.mkdir()
    login_token = secrets.token_urlsafe(24)
    (secret_dir / "agent_token").write_text(secrets.token_urlsafe(32))
    (secret_dir / "agent_read_token").write_text(secrets.token_urlsafe(32))
    (secret_dir / "login_tokens").write_text(f"{login_token} role=operator name=admin\n")
    (tmp_path / "data").mkdir()
    agents_port, web_port = free_port(), free_port()
    mapping = {
        "/run/secrets/": f"{secret_dir}/",
        "/data/": f"{tmp_path}/data/",
        "observer:4800": f"127.0.0.1:{agents_port}",
        "0.0.0.0:4800": f"127.0.0.1:{agents_port}",
        "0.0.0.0": "127.0.0.1",
        "8765": str(web_port),
    }
    obs = services["observer"]
    argv = _container_argv(_entrypoint(_dockerfile(obs)) + [str(a) for a in obs["command"]], mapping)
    assert argv[0] == "observer"
    argv = [sys.executable, "-m", "observer", *argv[1:]]  # the console script of the package, from this venv
    procs: list[subprocess.Popen[bytes]] = []
    try:
        observer = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=clean_env())
        procs.append(observer)
        assert observer.stdout is not None
        m, _ = read_line(observer.stdout, re.compile(r"open (http://127\.0\.0\.1:\d+)/login"), 60, "the observer URL")
        base = m.group(1)
        assert base.endswith(f":{web_port}")
        for name in ("node-1", "node-2", "node-3"):
            svc = services[name]
            node_argv = _container_argv(_entrypoint(_dockerfile(svc)) + [str(a) for a in svc.get("command", [])], {})
            assert node_argv[:3] == ["python", "-m", "observer.demo.node"]
            env = {k: _container_argv([v], mapping)[0] for k, v in env_map(svc["environment"]).items()}
            p = subprocess.Popen(
                [sys.executable, *node_argv[1:]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env=clean_env(PYTHONPATH=str(ROOT), **env),
            )  # fmt: skip
            procs.append(p)
        http = requests.Session()
        login(http, base, login_token)

        def up() -> bool:
            nodes = {n["name"]: n for n in http.get(f"{base}/api/cluster").json()["nodes"]}
            return set(nodes) == {"node-1", "node-2", "node-3"} and all(
                n["status"] == "up" and n["direction"] == "dial-in" and (n["process_count"] or 0) > 10
                for n in nodes.values()
            )

        wait_for(up, timeout=90, what="three dialling nodes up")
        assert (tmp_path / "data" / "history.sqlite3").is_file()
    finally:
        for p in reversed(procs):
            stop_process(p)
