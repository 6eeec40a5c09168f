"""A throw-away PKI for TLS tests, made with the ``openssl`` command line:
a self-signed CA, server and client certificates it signs, an expired server
certificate, and a server certificate signed by another (unknown) CA."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

SAN = "subjectAltName=IP:127.0.0.1,DNS:localhost\n"


@dataclass(frozen=True)
class Pki:
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    expired_cert: str
    expired_key: str
    rogue_cert: str
    rogue_key: str


def _run(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(d: Path, name: str) -> None:
    _run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
         f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}", cwd=d)  # fmt: skip


def _leaf(d: Path, name: str, ca: str, days: int, cn: str) -> None:
    _run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key",
         "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)  # fmt: skip
    _run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
         "-out", f"{name}.pem", "-days", str(days), "-extfile", "san.ext", cwd=d)  # fmt: skip


def make_pki(d: Path) -> Pki:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command line is needed to make test certificates")
    d.mkdir(parents=True, exist_ok=True)
    (d / "san.ext").write_text(SAN)
    _ca(d, "ca")
    _ca(d, "rogue-ca")
    _leaf(d, "server", "ca", 2, "127.0.0.1")
    _leaf(d, "client", "ca", 2, "observer-client")
    _leaf(d, "expired", "ca", -1, "127.0.0.1")  # not after < not before: expired
    _leaf(d, "rogue", "rogue-ca", 2, "127.0.0.1")
    p = {k: str(d / k) for k in ("ca", "server", "client", "expired", "rogue")}
    return Pki(
        f"{p['ca']}.pem",
        f"{p['server']}.pem",
        f"{p['server']}.key",
        f"{p['client']}.pem",
        f"{p['client']}.key",
        f"{p['expired']}.pem",
        f"{p['expired']}.key",
        f"{p['rogue']}.pem",
        f"{p['rogue']}.key",
    )
