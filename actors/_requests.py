"""Asynchronous calls: ``send_request`` now, the reply later (OTP's
``gen_server:send_request/2``, ``wait_response``, ``receive_response``,
``check_response`` and request-id collections).

A request is a call whose reply lands in the caller's mailbox instead of
being awaited at once, so one process can have many calls in flight. Each
request monitors the server: if the server dies (or was not alive) before it
replied, the caller gets :class:`ServerDied`, never a hang.

Concurrency rules: all of it runs in the calling process (the one passed as
``proc``), on the node's loop. The reply and the monitor's ``Down`` are
ordinary mailbox messages, matched by the request's reference; other
messages stay in the mailbox, in order (selective receive).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ._errors import CallTimeout, ReceiveTimeout, ServerDied, check_timeout
from ._messages import CallMsg, ReplyMsg, RequestFrom
from ._process import Process
from ._types import Down, Pid, Ref


class _NoReply:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_REPLY"


NO_REPLY: Any = _NoReply()
"""What :func:`check_response` returns for a message that is not the
request's reply nor its server's ``Down`` (OTP's ``no_reply``)."""


class RequestId:
    """A request in flight, from :func:`send_request`. Hashable; compare by identity of the request."""

    __slots__ = ("_from", "dest", "ref", "request")

    def __init__(self, ref: Ref, dest: Pid | str, request: Any, from_: RequestFrom) -> None:
        self.ref = ref
        """The reference the reply and the ``Down`` carry."""
        self.dest = dest
        """The server asked (pid or name)."""
        self.request = request
        """What was asked (for error messages)."""
        self._from = from_

    def __repr__(self) -> str:
        return f"<RequestId {self.ref} to {self.dest}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RequestId) and other.ref == self.ref

    def __hash__(self) -> int:
        return hash(self.ref)


def send_request(proc: Process, dest: Pid | str, request: Any) -> RequestId:
    """Send ``request`` to the gen_server ``dest`` as a call, without waiting;
    returns its :class:`RequestId`. Never blocks, never raises: if ``dest``
    is not alive, the answer is a ``ServerDied`` (``noproc``) when the
    response is read. Counts as a message out of ``proc``."""
    ref = proc.monitor(dest)
    proc.msgs_out += 1
    server = proc.node._get(dest)
    from_ = RequestFrom(proc, ref, server)
    if server is not None:
        server._deliver(CallMsg(request, from_))
    return RequestId(ref, dest, request, from_)


def _matcher(ref: Ref) -> Any:
    def match(m: Any) -> bool:
        t = type(m)
        return (t is ReplyMsg or t is Down) and m.ref == ref

    return match


def _settle(proc: Process, req: RequestId, msg: Any) -> Any:
    """``msg`` is the request's reply or Down: close the request, return or raise."""
    req._from.active = False
    if type(msg) is ReplyMsg:
        proc.demonitor(req.ref, flush=True)
        return msg.value
    raise ServerDied(req.dest, msg.reason)


async def wait_response(proc: Process, req: RequestId, *, timeout: float | None = 5.0) -> Any:
    """Wait up to ``timeout`` seconds (None: forever) for the reply to ``req``
    and return it. Raises :class:`ServerDied` if the server died first and
    :class:`CallTimeout` if the time ran out: the request is still in flight
    then, and can be waited for again (OTP's ``wait_response``)."""
    check_timeout(timeout)
    try:
        msg = await proc.receive(_matcher(req.ref), timeout=timeout)
    except ReceiveTimeout:
        raise CallTimeout(req.dest, req.request, timeout or 0.0) from None
    return _settle(proc, req, msg)


async def receive_response(proc: Process, req: RequestId, *, timeout: float | None = 5.0) -> Any:
    """As :func:`wait_response`, but a timeout abandons the request: the
    monitor is removed and a late reply is dropped, never delivered (OTP's
    ``receive_response``)."""
    check_timeout(timeout)
    try:
        msg = await proc.receive(_matcher(req.ref), timeout=timeout)
    except ReceiveTimeout:
        abandon(proc, req)
        raise CallTimeout(req.dest, req.request, timeout or 0.0) from None
    return _settle(proc, req, msg)


def check_response(proc: Process, msg: Any, req: RequestId) -> Any:
    """Look at a message ``proc`` received: the reply to ``req`` (returned),
    the ``Down`` of its server (raises :class:`ServerDied`), or anything else
    (returns :data:`NO_REPLY`). Never waits (OTP's ``check_response``)."""
    t = type(msg)
    if (t is ReplyMsg or t is Down) and msg.ref == req.ref:
        return _settle(proc, req, msg)
    return NO_REPLY


def abandon(proc: Process, req: RequestId) -> None:
    """Give up on ``req``: no reply nor ``Down`` for it will be received after this."""
    req._from.active = False
    proc.demonitor(req.ref, flush=True)
    proc.drop(_matcher(req.ref))


@dataclass(frozen=True, slots=True)
class Response:
    """One response taken from a :class:`RequestIds` collection."""

    request: RequestId
    """The request it answers."""
    label: Any
    """The label it was added with."""
    value: Any
    """The reply (None if ``error`` is set)."""
    error: ServerDied | None
    """Set if the server died before replying."""

    def result(self) -> Any:
        """The reply, or raise the :class:`ServerDied`."""
        if self.error is not None:
            raise self.error
        return self.value


class RequestIds:
    """A collection of requests in flight, each with a label (OTP's
    ``reqids_new/0``, ``reqids_add/3``, ``reqids_size/1``, ``reqids_to_list/1``):
    wait for whichever answers first. Mutable; use it from one process."""

    __slots__ = ("_reqs",)

    def __init__(self) -> None:
        self._reqs: dict[Ref, tuple[RequestId, Any]] = {}

    def add(self, req: RequestId, label: Any = None) -> None:
        """Add ``req`` with ``label``. Raises ``ValueError`` if it is already in."""
        if req.ref in self._reqs:
            raise ValueError(f"{req!r} is already in the collection")
        self._reqs[req.ref] = (req, label)

    def __len__(self) -> int:
        return len(self._reqs)

    def __iter__(self) -> Iterator[tuple[RequestId, Any]]:
        """``(request, label)`` pairs, in the order they were added."""
        return iter(list(self._reqs.values()))

    def to_list(self) -> list[tuple[RequestId, Any]]:
        """``(request, label)`` pairs, in the order they were added."""
        return list(self._reqs.values())

    def _match(self, m: Any) -> bool:
        t = type(m)
        return (t is ReplyMsg or t is Down) and m.ref in self._reqs

    def _take(self, proc: Process, msg: Any, delete: bool) -> Response:
        req, label = self._reqs[msg.ref]
        if delete:
            del self._reqs[msg.ref]
        try:
            return Response(req, label, _settle(proc, req, msg), None)
        except ServerDied as err:
            return Response(req, label, None, err)

    async def wait_response(
        self, proc: Process, *, timeout: float | None = 5.0, delete: bool = True
    ) -> Response | None:
        """Wait up to ``timeout`` seconds for the first response to any request
        of the collection; with ``delete``, that request leaves the collection.
        Returns None if the collection is empty (OTP's ``no_request``); raises
        :class:`CallTimeout` if nothing answered in time (the requests stay in flight)."""
        check_timeout(timeout)
        if not self._reqs:
            return None
        try:
            msg = await proc.receive(self._match, timeout=timeout)
        except ReceiveTimeout:
            raise CallTimeout(f"{len(self._reqs)} requests", None, timeout or 0.0) from None
        return self._take(proc, msg, delete)

    async def receive_response(
        self, proc: Process, *, timeout: float | None = 5.0, delete: bool = True
    ) -> Response | None:
        """As :meth:`wait_response`, but a timeout abandons every request of
        the collection (and empties it)."""
        check_timeout(timeout)
        if not self._reqs:
            return None
        try:
            msg = await proc.receive(self._match, timeout=timeout)
        except ReceiveTimeout:
            n = len(self._reqs)
            for req, _ in self.to_list():
                abandon(proc, req)
            self._reqs.clear()
            raise CallTimeout(f"{n} requests", None, timeout or 0.0) from None
        return self._take(proc, msg, delete)

    def check_response(self, proc: Process, msg: Any, *, delete: bool = True) -> Response | Any:
        """Look at a message ``proc`` received: a :class:`Response` if it
        answers a request of the collection, else :data:`NO_REPLY` (None if
        the collection is empty: OTP's ``no_request``). Never waits."""
        if not self._reqs:
            return None
        if self._match(msg):
            return self._take(proc, msg, delete)
        return NO_REPLY
