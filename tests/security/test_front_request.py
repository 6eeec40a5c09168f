"""The front's request scanning (observer/front_request.py), byte by byte: when a request
is whole, and what is refused before any thread sees it."""

from __future__ import annotations

from observer.front_request import MAX_BODY, MAX_HEAD, Scan, refusal, scan

HEAD = b"POST /login HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\n\r\n"


def test_a_request_is_whole_once_its_head_and_body_are_in_however_they_trickle() -> None:
    whole = HEAD + b"token=x"
    buf = bytearray()
    needs = []
    for i in range(len(whole)):
        buf.append(whole[i])
        needs.append(scan(buf).need)
    assert needs[: len(HEAD) - 1] == [-1] * (len(HEAD) - 1)  # no head yet
    assert set(needs[len(HEAD) - 1 :]) == {len(whole)}  # the head known: the body's length with it
    assert bytes(buf) == whole


def test_what_is_refused_at_once() -> None:
    assert scan(bytearray(b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD)).refuse == 431  # no end of head in sight
    assert scan(bytearray(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")).refuse == 411
    assert scan(bytearray(f"POST / HTTP/1.1\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n".encode())).refuse == 413
    odd = b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n"
    assert scan(bytearray(odd)) == Scan(need=len(odd))  # no body waited for: gunicorn answers it 400
    answer = refusal(413)
    assert answer.startswith(b"HTTP/1.1 413 Content Too Large\r\n") and b"Connection: close" in answer


def test_expect_continue_is_taken_out_of_the_head_and_empty_lines_before_it_dropped() -> None:
    buf = bytearray(b"\r\n\r\nPOST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    found = scan(buf)
    assert found.expect_continue and bytes(buf) == b"POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\n"
    assert found.need == len(buf) + 3
    # its body already there: nothing to answer, the head left as it is
    whole = bytearray(b"POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc")
    assert not scan(whole).expect_continue and scan(whole).need == len(whole)


def test_an_upgrade_is_noted() -> None:
    found = scan(bytearray(b"GET /socket.io/ HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"))
    assert found.upgrade and found.need > 0
