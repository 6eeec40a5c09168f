"""A believable little service to observe: chat, payments and a database pool.

``await build(node)`` starts the whole supervision tree on ``node`` and a
traffic process that drives it, so something happens every few seconds:
sessions log in and out, a flaky payment gateway corrupts the payment worker's
state and the worker crashes on it (``one_for_all`` restarts it with its
ledger), database connections drop (``rest_for_one`` restarts them), a buggy
client sends a malformed frame that crashes its session (a ``transient``
child, restarted), and a noisy customer floods one session's mailbox.

The tree (registered names in quotes)::

    "demo_sup"            one_for_one   3 restarts / 30 s
    ├── "pool_sup"        rest_for_one  (3 * pool size + 2) / 30 s
    │   ├── "pool"          PoolManager   permanent
    │   └── "conn:1".."conn:N" Connection permanent
    ├── "payments_sup"    one_for_all   3 / 12 s
    │   ├── "payments"      PaymentWorker permanent
    │   └── "ledger"        Ledger        permanent
    ├── "chat_sup"        one_for_one   3 / 30 s   (a supervisor of supervisors)
    │   ├── "rooms_sup"     one_for_one   3 / 10 s
    │   │   └── "room:lobby", "room:support", "room:random", "room:releases"  Room
    │   └── "sessions_sup"  simple_one_for_one 5 / 10 s
    │       └── SessionWorker x ~50*scale  transient
    ├── "noisy_customer"  NoisyCustomer temporary, brutal_kill
    └── "traffic"         Traffic       permanent, brutal_kill

Natural trouble is spaced so no supervisor exceeds its budget under normal
traffic; an operator killing ``payments`` four times within 12 seconds pushes
``payments_sup`` over (it gives up and the root restarts it).

Every random choice comes from ``random.Random`` instances seeded from
``seed`` and the component's name and incarnation, so a given seed replays the
same decisions (timing still depends on the machine). Nothing is global: all
state hangs off the node and the :class:`DemoHandles` returned by
:func:`build`.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import actors
from actors import (
    BRUTAL_KILL,
    NORMAL,
    PERMANENT,
    TEMPORARY,
    TRANSIENT,
    ActorError,
    ChildSpec,
    Down,
    From,
    GenServer,
    Node,
    NoProcess,
    NoReply,
    Pid,
    Process,
    ReceiveTimeout,
    Ref,
    Reply,
    Stop,
)

__all__ = [
    "CHAT_SUP",
    "PAYMENTS",
    "PAYMENTS_SUP",
    "POOL",
    "POOL_SUP",
    "ROOMS",
    "ROOMS_SUP",
    "ROOT",
    "SESSIONS_SUP",
    "Connection",
    "DemoHandles",
    "FlakyGateway",
    "Ledger",
    "PaymentWorker",
    "PoolManager",
    "Room",
    "SessionWorker",
    "SettlementError",
    "bad_frame",
    "build",
    "frame",
    "room_name",
]

# -- names --------------------------------------------------------------------------------

ROOT = "demo_sup"
CHAT_SUP = "chat_sup"
ROOMS_SUP = "rooms_sup"
SESSIONS_SUP = "sessions_sup"
PAYMENTS_SUP = "payments_sup"
POOL_SUP = "pool_sup"
PAYMENTS = "payments"
LEDGER = "ledger"
POOL = "pool"
TRAFFIC = "traffic"
NOISY = "noisy_customer"
ROOMS = ("lobby", "support", "random", "releases")

SESSIONS_PER_SCALE = 50
SESSION_MEAN_LIFETIME = 40.0  # seconds
SESSION_ACT_RATE = 0.5  # frames per session per second
CHARGE_INTERVAL = (0.2, 0.3)  # seconds between two charges
GLITCH_GAP = (30, 60)  # gateway calls between two corrupted responses
FIRST_GLITCH = (4, 10)  # ... for the first incarnation, so trouble comes early
SETTLE_EVERY = 1.0  # seconds between two settlement runs
CONN_LIFETIME = (12.0, 50.0)  # seconds before a connection drops
BAD_FRAME_GAP = (5.0, 10.0)  # seconds between two malformed client frames
FIRST_BAD_FRAME = (1.0, 2.5)
BURST_GAP = (6.0, 12.0)  # seconds between two noisy-customer bursts
FIRST_BURST = (2.0, 4.0)
BURST_SIZE = (150, 400)
SEARCH_COST = 0.004  # seconds a session spends on one search frame


def room_name(room: str) -> str:
    """The registered name of a chat room's server."""
    return f"room:{room}"


def conn_name(idx: int) -> str:
    """The registered name of the ``idx``-th database connection (from 1)."""
    return f"conn:{idx}"


# -- shared context (one per build, never global) -----------------------------------------------


@dataclass
class _Context:
    """What every process of one demo tree shares: the node, the seed, timers."""

    node: Node
    seed: int
    scale: int
    pool_size: int
    incarnations: dict[str, int] = field(default_factory=dict)
    timers: set[asyncio.TimerHandle] = field(default_factory=set)
    closed: bool = False

    def rng(self, key: str) -> random.Random:
        """A fresh generator for the next incarnation of component ``key``:
        seeded from (seed, key, incarnation), so a seed replays the same choices."""
        n = self.incarnations.get(key, 0)
        self.incarnations[key] = n + 1
        return random.Random(f"{self.seed}:{key}:{n}")

    def send_after(self, dest: Pid, delay: float, msg: Any) -> None:
        """Send ``msg`` to ``dest`` in ``delay`` seconds (dropped if it died meanwhile)."""
        if self.closed:
            return
        node = self.node

        def fire() -> None:
            self.timers.discard(handle)
            node.send(dest, msg)

        handle = node.loop.call_later(delay, fire)
        self.timers.add(handle)

    def close(self) -> None:
        self.closed = True
        for handle in self.timers:
            handle.cancel()
        self.timers.clear()


def _cast(proc: Process, dest: Pid | str, msg: Any) -> bool:
    """Cast, tolerating a name that is not registered (its owner is restarting)."""
    try:
        proc.cast(dest, msg)
    except NoProcess:
        return False
    return True


# -- chat ------------------------------------------------------------------------------------------


def frame(op: str, **fields: Any) -> bytes:
    """A well-formed client frame, as a mobile client sends it."""
    return json.dumps({"op": op, **fields}).encode("utf-8")


def bad_frame() -> bytes:
    """A malformed frame: Latin-1 text where UTF-8 is expected (a real client bug)."""
    return b'{"op": "post", "text": "caf\xe9 cr\xe8me \xff\xfe"}'


def _decode_frame(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"malformed client frame ({len(raw)} bytes): not UTF-8") from exc
    decoded = json.loads(text)
    if not isinstance(decoded, dict) or "op" not in decoded:
        raise ValueError(f"client frame without an op: {text[:60]!r}")
    return decoded


class Room(GenServer):
    """A chat room: members (monitored), a short history, broadcasts."""

    async def init(self, ctx: _Context, room: str) -> dict[str, Any]:
        self.refs: dict[Pid, Ref] = {}
        topics = {
            "lobby": "Welcome! Be nice.",
            "support": "Payment issues? Ask here.",
            "random": "Anything goes",
            "releases": "v2.14 ships Thursday",
        }
        return {"room": room, "topic": topics.get(room, ""), "members": {}, "history": [], "posts": 0}

    async def handle_call(self, request: Any, from_: From, state: Any) -> Reply | NoReply | Stop:
        match request:
            case ("join", str(user), Pid() as pid):
                if pid not in self.refs:
                    self.refs[pid] = self.proc.monitor(pid)
                state["members"][pid] = user
                return Reply(("ok", len(state["members"])), state)
            case "members":
                return Reply(dict(state["members"]), state)
        return await super().handle_call(request, from_, state)

    async def handle_cast(self, request: Any, state: Any) -> Any:
        match request:
            case ("post", str(user), str(text)):
                state["posts"] += 1
                history = state["history"]
                history.append((user, text))
                del history[:-20]
                msg = ("message", state["room"], user, text)
                for pid in list(state["members"]):
                    self.proc.send(pid, msg)
                return state
            case ("leave", Pid() as pid):
                self._forget(pid, state)
                return state
        return await super().handle_cast(request, state)

    async def handle_info(self, msg: Any, state: Any) -> Any:
        if isinstance(msg, Down):
            self._forget(msg.pid, state)
            return state
        return await super().handle_info(msg, state)

    def _forget(self, pid: Pid, state: dict[str, Any]) -> None:
        ref = self.refs.pop(pid, None)
        if ref is not None:
            self.proc.demonitor(ref, flush=True)
        state["members"].pop(pid, None)


class SessionWorker(GenServer):
    """One logged-in user: decodes client frames, posts to rooms, collects unread messages.

    A ``transient`` child of ``sessions_sup``: logging out ends it ``normal``
    (not restarted); a malformed frame crashes it (restarted, rejoining its rooms).
    """

    async def init(self, ctx: _Context, user: str) -> dict[str, Any]:
        self.ctx = ctx
        self.rng = ctx.rng(f"session:{user}")
        rooms = self.rng.sample(ROOMS, k=self.rng.choice((1, 1, 2)))
        joined = [room for room in rooms if await self._join(user, room)]
        try:
            self.proc.send(TRAFFIC, ("session_up", self.proc.pid, user))
        except NoProcess:
            pass
        return {
            "user": user,
            "device": self.rng.choice(("ios", "android", "web")),
            "auth_token": f"sess_{self.rng.getrandbits(64):016x}",
            "rooms": joined,
            "frames": 0,
            "posts": 0,
            "searches": 0,
            "unread": 0,
            "recent": [],
        }

    async def _join(self, user: str, room: str) -> bool:
        try:
            await self.proc.call(room_name(room), ("join", user, self.proc.pid), timeout=1.0)
        except ActorError:
            return False
        return True

    async def handle_cast(self, request: Any, state: Any) -> Any:
        match request:
            case ("frame", bytes(raw)):
                state["frames"] += 1
                return await self._handle_frame(_decode_frame(raw), state)
        return await super().handle_cast(request, state)

    async def _handle_frame(self, msg: dict[str, Any], state: dict[str, Any]) -> Any:
        op = msg["op"]
        user = state["user"]
        if op == "post" and state["rooms"]:
            room = self.rng.choice(state["rooms"])
            state["posts"] += 1
            _cast(self.proc, room_name(room), ("post", user, str(msg.get("text", ""))))
        elif op == "join":
            room = str(msg.get("room"))
            if room in ROOMS and room not in state["rooms"] and await self._join(user, room):
                state["rooms"].append(room)
        elif op == "leave" and len(state["rooms"]) > 1:
            room = state["rooms"].pop(0)
            _cast(self.proc, room_name(room), ("leave", self.proc.pid))
        elif op == "search":
            state["searches"] += 1
            await asyncio.sleep(SEARCH_COST)  # the "search backend"
        elif op == "logout":
            return Stop(NORMAL, state)
        return state

    async def handle_info(self, msg: Any, state: Any) -> Any:
        match msg:
            case ("message", str(room), str(user), str(text)):
                state["unread"] += 1
                recent = state["recent"]
                recent.append(f"#{room} <{user}> {text}")
                del recent[:-5]
                return state
        return await super().handle_info(msg, state)

    async def terminate(self, reason: Any, state: Any) -> None:
        if reason == NORMAL and isinstance(state, dict):
            for room in state.get("rooms", ()):
                _cast(self.proc, room_name(room), ("leave", self.proc.pid))


# -- payments --------------------------------------------------------------------------------------------


class SettlementError(RuntimeError):
    """An authorization could not be captured."""


class FlakyGateway:
    """A simulated external payment API. Now and then it answers with a
    corrupted authorization (a missing ``auth_code`` or a locale-formatted
    amount); the worker stores it and crashes when it settles it."""

    def __init__(self, rng: random.Random, *, first: bool) -> None:
        self.rng = rng
        self.calls = 0
        lo, hi = FIRST_GLITCH if first else GLITCH_GAP
        self.next_glitch = rng.randint(lo, hi)

    async def authorize(self, amount_cents: int, currency: str, card_token: str) -> dict[str, Any]:
        """Authorize a charge: the response as the gateway's JSON would decode."""
        rng = self.rng
        await asyncio.sleep(rng.uniform(0.001, 0.006))  # the network
        self.calls += 1
        if self.calls >= self.next_glitch:
            self.next_glitch = self.calls + rng.randint(*GLITCH_GAP)
            resp = self._approved(amount_cents, currency, card_token)
            if rng.random() < 0.5:
                del resp["auth_code"]  # truncated body
            else:
                resp["amount"] = resp["amount"].replace(".", ",")  # a locale bug upstream
            return resp
        if rng.random() < 0.06:
            return {"status": "declined", "decline_code": rng.choice(("insufficient_funds", "expired_card"))}
        return self._approved(amount_cents, currency, card_token)

    def _approved(self, amount_cents: int, currency: str, card_token: str) -> dict[str, Any]:
        return {
            "status": "approved",
            "auth_code": f"A{self.rng.randrange(16**6):06X}",
            "amount": f"{amount_cents / 100:.2f}",
            "currency": currency,
            "card_token": card_token,
        }


def _parse_amount(raw: str) -> int:
    try:
        return int(Decimal(raw) * 100)
    except InvalidOperation as exc:
        raise ValueError(f"gateway returned a malformed amount {raw!r}") from exc


def _capture(charge_id: str, auth: dict[str, Any]) -> dict[str, Any]:
    try:
        code = auth["auth_code"]
    except KeyError as exc:
        raise SettlementError(f"authorization for {charge_id} has no auth_code") from exc
    return {
        "charge_id": charge_id,
        "auth_code": code,
        "amount_cents": _parse_amount(auth["amount"]),
        "currency": auth["currency"],
    }


class PaymentWorker(GenServer):
    """Authorizes charges with the flaky gateway and settles them every second
    into the ledger. Its state holds secrets (``api_key``, ``card_token``)."""

    async def init(self, ctx: _Context) -> dict[str, Any]:
        self.ctx = ctx
        first = ctx.incarnations.get(PAYMENTS, 0) == 0
        rng = ctx.rng(PAYMENTS)
        self.gateway = FlakyGateway(rng, first=first)
        ctx.send_after(self.proc.pid, SETTLE_EVERY, "settle")
        return {
            "merchant_id": "m_4821",
            "gateway_url": "https://api.paygate.example/v2",
            "api_key": f"sk_live_{rng.getrandbits(96):024x}",
            "authorizations": {},
            "last_card_token": None,
            "settled": 0,
            "declined": 0,
        }

    async def handle_cast(self, request: Any, state: Any) -> Any:
        match request:
            case ("charge", str(charge_id), int(amount), str(currency), str(card_token)):
                resp = await self.gateway.authorize(amount, currency, card_token)
                state["last_card_token"] = card_token
                if resp["status"] == "approved":
                    state["authorizations"][charge_id] = resp
                else:
                    state["declined"] += 1
                return state
        return await super().handle_cast(request, state)

    async def handle_info(self, msg: Any, state: Any) -> Any:
        if msg == "settle":
            self.ctx.send_after(self.proc.pid, SETTLE_EVERY, "settle")
            return self._settle(state)
        return await super().handle_info(msg, state)

    def _settle(self, state: dict[str, Any]) -> dict[str, Any]:
        auths: dict[str, Any] = state["authorizations"]
        for charge_id in list(auths):
            entry = _capture(charge_id, auths[charge_id])
            del auths[charge_id]
            state["settled"] += 1
            _cast(self.proc, LEDGER, ("record", entry))
        return state

    async def handle_call(self, request: Any, from_: From, state: Any) -> Reply | NoReply | Stop:
        if request == "stats":
            return Reply({"settled": state["settled"], "pending": len(state["authorizations"])}, state)
        match request:
            case ("status", {"charge_id": str(charge_id)}):
                pending = charge_id in state["authorizations"]
                return Reply({"charge_id": charge_id, "pending": pending, "settled": state["settled"]}, state)
        return await super().handle_call(request, from_, state)


class Ledger(GenServer):
    """Books settled payments (and writes them through the connection pool)."""

    async def init(self, ctx: _Context) -> dict[str, Any]:
        return {"entries": [], "totals": {}, "count": 0}

    async def handle_cast(self, request: Any, state: Any) -> Any:
        match request:
            case ("record", dict(entry)):
                state["count"] += 1
                totals = state["totals"]
                totals[entry["currency"]] = totals.get(entry["currency"], 0) + entry["amount_cents"]
                state["entries"].append(entry)
                del state["entries"][:-25]
                _cast(self.proc, POOL, ("query", f"INSERT INTO ledger_entries VALUES ('{entry['charge_id']}', ...)"))
                return state
        return await super().handle_cast(request, state)

    async def handle_call(self, request: Any, from_: From, state: Any) -> Reply | NoReply | Stop:
        if request == "balance":
            return Reply(dict(state["totals"]), state)
        return await super().handle_call(request, from_, state)


# -- connection pool -------------------------------------------------------------------------------------------


class PoolManager(GenServer):
    """Hands queries to the live connections, round robin. Connections announce
    themselves when they start; the manager monitors them."""

    async def init(self, ctx: _Context) -> dict[str, Any]:
        return {"connections": {}, "next": 0, "queries": 0, "unavailable": 0, "lost": 0}

    async def handle_cast(self, request: Any, state: Any) -> Any:
        match request:
            case ("conn_up", int(idx), Pid() as pid):
                self.proc.monitor(pid)
                state["connections"][idx] = pid
                return state
            case ("query", str(sql)):
                conns = sorted(state["connections"].items())
                if not conns:
                    state["unavailable"] += 1
                    return state
                state["next"] = (state["next"] + 1) % len(conns)
                self.proc.cast(conns[state["next"]][1], ("query", sql))
                state["queries"] += 1
                return state
        return await super().handle_cast(request, state)

    async def handle_info(self, msg: Any, state: Any) -> Any:
        if isinstance(msg, Down):
            conns = state["connections"]
            for idx, pid in list(conns.items()):
                if pid == msg.pid:
                    del conns[idx]
                    state["lost"] += 1
            return state
        return await super().handle_info(msg, state)

    async def handle_call(self, request: Any, from_: From, state: Any) -> Reply | NoReply | Stop:
        if request == "stats":
            return Reply({k: v for k, v in state.items() if k != "connections"}, state)
        return await super().handle_call(request, from_, state)


def _read_packet(state: dict[str, Any]) -> bytes:
    raise ConnectionResetError(104, f"connection to {state['host']} reset by peer")


class Connection(GenServer):
    """A database connection. It drops after a while (the server closes it)."""

    async def init(self, ctx: _Context, idx: int) -> dict[str, Any]:
        self.rng = ctx.rng(conn_name(idx))
        ctx.send_after(self.proc.pid, self.rng.uniform(*CONN_LIFETIME), "socket_closed")
        _cast(self.proc, POOL, ("conn_up", idx, self.proc.pid))
        return {
            "idx": idx,
            "host": "db-primary:5432",
            "dsn": f"postgresql://shop_app@db-primary:5432/shop?application_name=conn{idx}",
            "password": f"pg-{self.rng.getrandbits(48):012x}",
            "opened_at": time.time(),
            "queries": 0,
            "last_query": None,
        }

    async def handle_cast(self, request: Any, state: Any) -> Any:
        match request:
            case ("query", str(sql)):
                await asyncio.sleep(self.rng.uniform(0.0005, 0.003))
                state["queries"] += 1
                state["last_query"] = sql
                return state
        return await super().handle_cast(request, state)

    async def handle_info(self, msg: Any, state: Any) -> Any:
        if msg == "socket_closed":
            if self.rng.random() < 0.7:
                _read_packet(state)  # raises ConnectionResetError
            return Stop(("tcp_closed", state["host"]), state)
        return await super().handle_info(msg, state)


# -- load: the traffic and the noisy customer --------------------------------------------------------------------


async def _wait(proc: Process, seconds: float) -> list[Any]:
    """Wait ``seconds`` in ``receive`` (so the process shows as waiting); return what arrived."""
    loop = proc.node.loop
    deadline = loop.time() + seconds
    got: list[Any] = []
    while True:
        try:
            got.append(await proc.receive(timeout=max(deadline - loop.time(), 0.0)))
        except ReceiveTimeout:
            return got


def _poisson_ish(rng: random.Random, expected: float) -> int:
    whole = int(expected)
    return whole + (1 if rng.random() < expected - whole else 0)


_USERS = ("alice", "bob", "chen", "dana", "emeka", "farah", "gus", "hana", "ivan", "jo", "kemal", "lena")
_TEXTS = (
    "is the deploy done?",
    "my card got charged twice",
    "lunch?",
    "the build is green again",
    "who owns the pool config?",
    "refund went through, thanks",
    "+1",
    "can someone look at INC-2291",
)


async def _traffic(proc: Process, ctx: _Context) -> None:
    """The outside world: users logging in and out and chatting, customers
    paying, queries hitting the pool, and now and then a buggy client."""
    proc.register(TRAFFIC)
    node = proc.node
    loop = node.loop
    rng = ctx.rng(TRAFFIC)
    sessions: dict[Pid, str] = {}
    users = _user_names(rng)
    tick = 0.1
    now = loop.time()
    next_charge = now + rng.uniform(*CHARGE_INTERVAL)
    next_bad_frame = now + rng.uniform(*FIRST_BAD_FRAME)
    charge_serial = 0
    target = SESSIONS_PER_SCALE * ctx.scale

    def track(pid: Pid, user: str) -> None:
        if pid not in sessions and node.is_alive(pid):
            sessions[pid] = user
            proc.monitor(pid)

    try:  # adopt the sessions of a previous incarnation
        for row in await actors.which_children(node, SESSIONS_SUP, timeout=2.0):
            if row.pid is not None:
                track(row.pid, "?")
    except ActorError:
        pass

    while True:
        for msg in await _wait(proc, tick):
            match msg:
                case ("session_up", Pid() as pid, str(user)):
                    track(pid, user)
                case Down(pid=pid):
                    sessions.pop(pid, None)
        now = loop.time()
        live = list(sessions)

        # logins, up to the target population
        for _ in range(min(5, target - len(sessions))):
            try:
                await actors.start_child(node, SESSIONS_SUP, (next(users),), timeout=2.0)
            except ActorError:
                break
        # logouts (mean lifetime SESSION_MEAN_LIFETIME)
        for _ in range(_poisson_ish(rng, len(live) * tick / SESSION_MEAN_LIFETIME)):
            proc.cast(rng.choice(live), ("frame", frame("logout")))
        # chatting
        for _ in range(_poisson_ish(rng, len(live) * tick * SESSION_ACT_RATE)):
            op = rng.choices(("post", "search", "join", "leave"), weights=(60, 25, 10, 5))[0]
            if op == "post":
                data = frame("post", text=rng.choice(_TEXTS))
            elif op == "join":
                data = frame("join", room=rng.choice(ROOMS))
            else:
                data = frame(op)
            proc.cast(rng.choice(live), ("frame", data))
        # a buggy client
        if now >= next_bad_frame and live:
            next_bad_frame = now + rng.uniform(*BAD_FRAME_GAP)
            proc.cast(rng.choice(live), ("frame", bad_frame()))
        # customers paying
        while now >= next_charge:
            next_charge += rng.uniform(*CHARGE_INTERVAL)
            charge_serial += 1
            charge = (
                "charge",
                f"ch_{ctx.seed % 1000:03d}{charge_serial:06d}",
                rng.randint(199, 25_000),
                rng.choice(("EUR", "EUR", "USD", "GBP")),
                f"tok_{rng.choice(('4242', '5555', '3782'))}_{rng.getrandbits(40):010x}",
            )
            _cast(proc, PAYMENTS, charge)
            if charge_serial % 4 == 0:  # the checkout page asks how a payment stands
                try:
                    await proc.call(
                        PAYMENTS, ("status", {"charge_id": charge[1], "card_token": charge[4]}), timeout=0.5
                    )
                except ActorError:
                    pass
        # reads on the pool
        for _ in range(rng.randint(0, 3)):
            _cast(
                proc, POOL, ("query", rng.choice(("SELECT * FROM orders WHERE id = $1", "SELECT count(*) FROM carts")))
            )


def _user_names(rng: random.Random) -> Iterator[str]:
    serial = 0
    while True:
        serial += 1
        yield f"{rng.choice(_USERS)}{serial}"


async def _noisy_customer(proc: Process, ctx: _Context) -> None:
    """Every several seconds, floods one session with hundreds of search
    requests: its mailbox fills up, then drains at the session's pace."""
    proc.register(NOISY)
    node = proc.node
    rng = ctx.rng(NOISY)
    await _wait(proc, rng.uniform(*FIRST_BURST))
    while True:
        try:
            rows = await actors.which_children(node, SESSIONS_SUP, timeout=2.0)
        except ActorError:
            rows = []
        live = [row.pid for row in rows if row.pid is not None]
        if live:
            target = live[rng.randrange(len(live))]
            for i in range(rng.randint(*BURST_SIZE)):
                proc.cast(target, ("frame", frame("search", q=f"order #{i}")))
        await _wait(proc, rng.uniform(*BURST_GAP))


# -- the tree -------------------------------------------------------------------------------------------------------


@dataclass
class DemoHandles:
    """What :func:`build` started."""

    node: Node
    root: Pid
    """The root supervisor (registered as ``demo_sup``)."""
    seed: int
    """The seed in use (drawn at random when ``build`` got None)."""
    scale: int
    specs: dict[str, list[ChildSpec]]
    """Each supervisor's registered name -> the child specs it was started with
    (for ``simple_one_for_one``, the one template)."""
    _ctx: _Context

    async def stop(self) -> None:
        """Stop the tree (the root supervisor stops its children in reverse order)."""
        self._ctx.close()
        if self.node.is_alive(self.root):
            try:
                await actors.stop_server(self.node, self.root, actors.SHUTDOWN, timeout=10.0)
            except ActorError:
                pass


async def build(node: Node, *, scale: int = 1, seed: int | None = None, traffic: bool = True) -> DemoHandles:
    """Start the demo tree on ``node`` and return its handles.

    ``scale`` multiplies the load (about ``50 * scale`` chat sessions, a pool of
    ``3 + scale`` connections); ``seed`` makes every random choice replayable.
    ``traffic=False`` leaves out the traffic process (nothing happens on its own
    except dropping connections): for tests that drive the tree themselves.
    """
    if scale < 1:
        raise ValueError("scale must be >= 1")
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    ctx = _Context(node, seed, scale, pool_size=3 + scale)
    specs = _specs(ctx, traffic=traffic)
    try:
        root = await actors.start_supervisor(
            node, specs[ROOT], strategy="one_for_one", intensity=3, period=30.0, name=ROOT, label="RootSupervisor"
        )
    except BaseException:
        ctx.close()
        raise
    return DemoHandles(node, root, seed, scale, specs, ctx)


def _specs(ctx: _Context, *, traffic: bool) -> dict[str, list[ChildSpec]]:
    n = ctx.pool_size
    specs: dict[str, list[ChildSpec]] = {
        POOL_SUP: [
            PoolManager.child_spec(ctx, id="manager", name=POOL, label="PoolManager"),
            *(
                Connection.child_spec(ctx, i, id=conn_name(i), name=conn_name(i), shutdown=1.0, label="Connection")
                for i in range(1, n + 1)
            ),
        ],
        PAYMENTS_SUP: [
            PaymentWorker.child_spec(ctx, id="worker", name=PAYMENTS, label="PaymentWorker"),
            Ledger.child_spec(ctx, id="ledger", name=LEDGER, label="Ledger"),
        ],
        ROOMS_SUP: [Room.child_spec(ctx, room, id=room, name=room_name(room), label="Room") for room in ROOMS],
        SESSIONS_SUP: [
            SessionWorker.child_spec(ctx, id="session", restart=TRANSIENT, shutdown=2.0, label="SessionWorker")
        ],
    }
    specs[CHAT_SUP] = [
        actors.supervisor_spec(
            "rooms", specs[ROOMS_SUP], strategy="one_for_one", intensity=3, period=10.0, name=ROOMS_SUP,
            label="RoomsSupervisor",
        ),
        actors.supervisor_spec(
            "sessions", specs[SESSIONS_SUP], strategy="simple_one_for_one", intensity=5, period=10.0,
            name=SESSIONS_SUP, label="SessionsSupervisor",
        ),
    ]  # fmt: skip
    root = [
        actors.supervisor_spec(
            "pool", specs[POOL_SUP], strategy="rest_for_one", intensity=3 * n + 2, period=30.0, name=POOL_SUP,
            label="PoolSupervisor",
        ),
        actors.supervisor_spec(
            "payments", specs[PAYMENTS_SUP], strategy="one_for_all", intensity=3, period=12.0, name=PAYMENTS_SUP,
            label="PaymentsSupervisor",
        ),
        actors.supervisor_spec(
            "chat", specs[CHAT_SUP], strategy="one_for_one", intensity=3, period=30.0, name=CHAT_SUP,
            label="ChatSupervisor",
        ),
        actors.worker(NOISY, _noisy_customer, ctx, restart=TEMPORARY, shutdown=BRUTAL_KILL, label="NoisyCustomer"),
    ]  # fmt: skip
    if traffic:
        root.append(actors.worker(TRAFFIC, _traffic, ctx, restart=PERMANENT, shutdown=BRUTAL_KILL, label="Traffic"))
    specs[ROOT] = root
    return specs
