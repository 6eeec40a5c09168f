"""The handshake of one observer connection: ``hello`` -> ``auth`` ->
``welcome`` (protocol §3), on the agent's loop, within the pre-auth deadline
(agent/_preauth.py). The token itself never crosses the wire: each side
proves it by a MAC over both nonces, the role, both ids and the TLS channel."""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import TYPE_CHECKING

from . import protocol as P

if TYPE_CHECKING:
    from ._session import Session

audit = logging.getLogger("agent.audit")


async def handshake_steps(s: Session) -> bool:
    """Run the handshake on ``s``; True once ``welcome`` is sent (the session
    is then ready and will start with a snapshot), False after a refusal."""
    agent = s.agent
    pre = agent.preauth
    nonce = secrets.token_hex(16)
    # only what the handshake needs before authentication: nothing about the host
    hello: P.HelloMsg = {
        "t": "hello",
        "protocol": P.PROTOCOL,
        "versions": list(P.SUPPORTED_VERSIONS),
        "nonce": nonce,
        "agent": pre.agent_id,
    }
    await s._send_now(hello)
    try:
        msg = await asyncio.wait_for(s._read_frame(), pre.deadline)
    except TimeoutError:
        pre.timed_out += 1
        pre.note(s.peer_host, "timed out")
        await s._fail(P.E_BAD_HANDSHAKE, "handshake timed out")
        return False
    except P.FrameError as exc:
        pre.note(s.peer_host, f"sent a bad frame ({exc.code})")
        await s._fail(exc.code, str(exc))
        return False
    version = msg.get("version")
    if msg.get("t") != "auth" or type(version) is not int or version not in P.SUPPORTED_VERSIONS:
        pre.note(s.peer_host, f"refused: protocol version {str(version)[:10]}, not {list(P.SUPPORTED_VERSIONS)}")
        await s._fail(
            P.E_BAD_HANDSHAKE,
            f"this agent speaks protocol version(s) {list(P.SUPPORTED_VERSIONS)}: upgrade the observer",
        )
        return False
    role = msg.get("role")
    client_nonce = msg.get("nonce")
    observer_id = msg.get("observer")
    token = agent.token_for(role) if isinstance(role, str) else None
    channel = P.channel_binding(s.writer.get_extra_info("ssl_object"))
    if (
        token is None
        or not isinstance(client_nonce, str)
        or not (16 <= len(client_nonce) <= 128)
        or not isinstance(observer_id, str)
        or len(observer_id) > 128
        or not P.verify(
            P.client_mac(
                token,
                nonce,
                client_nonce,
                str(role),
                agent_id=pre.agent_id,
                observer_id=str(observer_id),
                channel=channel,
            ),
            msg.get("mac"),
        )
    ):
        agent.auth_failures += 1
        pre.failed += 1
        pre.note(s.peer_host, "authentication failed")
        await s._fail(P.E_AUTH_FAILED, "authentication failed")
        return False
    assert isinstance(role, str)
    if len(agent.ready_sessions()) >= agent.max_sessions:
        await s._fail(P.E_BUSY, "too many observers attached")
        return False
    s.role = role
    s.commands = tuple(c for c in P.commands_for(role) if c in agent.source.commands)
    asked = msg.get("features")
    granted = [f for f in P.FEATURES if f in asked] if isinstance(asked, list) else None
    s.batch = granted is not None and P.FEATURE_BATCH in granted
    audit.info("agent: %s attached from %s as %s (observer %.40s)", s.id, s.peer, role, observer_id)
    welcome: P.WelcomeMsg = {
        "t": "welcome",
        "version": P.VERSION,
        "role": role,
        "mac": P.server_mac(
            token, nonce, client_nonce, role, agent_id=pre.agent_id, observer_id=str(observer_id), channel=channel
        ),
        "session": s.id,
        "commands": list(s.commands),
        "sample_hz": agent.sample_hz,
        "node_kind": agent.source.kind,
        "node": agent.node_meta(),
    }
    if granted is not None:  # only to an observer that asked: an older one is served as before
        welcome["features"] = granted
    await s._send_now(welcome)
    s.ready = True
    agent.sessions_changed()
    s.resync = True  # the first thing written is a snapshot
    s._wake.set()
    return True
