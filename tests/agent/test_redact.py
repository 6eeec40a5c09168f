"""agent._redact (agent._serialize + agent._scrub): bounded, never-raising, redacting serialization."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import decimal
import enum
import json
import time
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors._types import Pid, Ref
from agent._redact import Redactor, encode
from agent._scrub import RedactionPolicy, is_secret_name, name_parts, redact_text
from agent._serialize import Encoded

SLACK = 512  # closing markers may go a little past max_bytes


def enc(value: Any, **policy: Any) -> Encoded:
    # a generous time budget unless a test is about it: a loaded machine must
    # not truncate what a test checks field by field
    policy.setdefault("time_budget_s", 30.0)
    result = Redactor(RedactionPolicy(**policy)).encode(value)
    text = json.dumps(result.data)  # always JSON-able
    text.encode("utf-8")  # and UTF-8-encodable
    assert result.size == len(text)
    return result


def fields(data: Any) -> dict[str, Any]:
    assert isinstance(data, dict) and "fields" in data, data
    out = data["fields"]
    assert isinstance(out, dict)
    return out


# --------------------------------------------------------------------------- masking


def test_masks_secret_dict_keys_at_any_depth() -> None:
    value = {
        "password": "hunter2",
        "user": "bob",
        "nested": [{"deeper": {"api_key": "k1", "ok": 1}}, ({"Authorization": "Bearer t"},)],
    }
    result = enc(value)
    data = result.data
    assert data["password"] == "***"
    assert data["user"] == "bob"
    assert data["nested"][0]["deeper"] == {"api_key": "***", "ok": 1}
    assert data["nested"][1]["items"][0] == {"Authorization": "***"}
    assert result.masked == 3
    assert "hunter2" not in json.dumps(data)


def test_masks_object_attributes_and_dataclass_fields() -> None:
    @dataclasses.dataclass
    class Config:
        host: str
        dbPassword: str
        session_id: int

    class Conn:
        def __init__(self) -> None:
            self.config = Config("db", "pw", 7)
            self._auth_token = "t"
            self.port = 5432

    class Slotted:
        __slots__ = ("clientSecret", "name")

        def __init__(self) -> None:
            self.clientSecret = "s"
            self.name = "n"

    result = enc({"conn": Conn(), "slotted": Slotted()})
    conn = fields(result.data["conn"])
    assert result.data["conn"]["__type__"].endswith("Conn")
    assert conn["_auth_token"] == "***"
    assert conn["port"] == 5432
    assert fields(conn["config"]) == {"host": "db", "dbPassword": "***", "session_id": "***"}
    assert fields(result.data["slotted"]) == {"clientSecret": "***", "name": "n"}
    assert result.masked == 4


@pytest.mark.parametrize(
    "name",
    [
        "password",
        "PASSWORD",
        "db_password",
        "dbPassword",
        "DB-PASSWORD",
        "password2",
        "passwords",
        "dbpassword",
        "apiKey",
        "APIKey",
        "api_key",
        "APIKEY",
        "x-api-key",
        "secret",
        "client_secret",
        "clientsecret",
        "accessToken",
        "access_token",
        "accesstoken",
        "refresh.token",
        "tokens",
        "Cookie",
        "set-cookie",
        "Authorization",
        "auth",
        "credentials",
        "private_key",
        "sessionId",
        "user_session_id",
        "SESSION_ID",
        "card_number",
        "creditCard",
        "key",
        "_Foo__secret",
    ],
)
def test_secret_names_in_any_case_style_are_masked(name: str) -> None:
    assert is_secret_name(name)
    assert enc({name: "value"}).data == {name: "***"}


@pytest.mark.parametrize(
    "name",
    [
        "monkey",
        "keyboard",
        "hotkey",
        "author",
        "oauth",
        "cardinality",
        "discard",
        "tokenizer",
        "secretary",
        "passage",
        "session",
        "KeyError",
        "token_error",
        "user",
        "",
    ],
)
def test_look_alike_names_are_not_masked(name: str) -> None:
    assert not is_secret_name(name)
    assert enc({name: "value"}).data == {name: "value"}


def test_name_parts_split_on_separators_camel_case_and_digits() -> None:
    assert name_parts("dbPassword") == ("db", "password")
    assert name_parts("APIKey2") == ("api", "key", "2")
    assert name_parts("x-api.key_id") == ("x", "api", "key", "id")


def test_masked_values_are_never_looked_at() -> None:
    class Exploding:
        def __repr__(self) -> str:
            raise AssertionError("must not be called")

    result = enc({"secret": Exploding(), "token": [Exploding()] * 3})
    assert result.data == {"secret": "***", "token": "***"}
    assert result.masked == 2


def test_pairs_whose_first_element_names_a_secret_are_masked() -> None:
    headers = [("Authorization", "Bearer abc"), ("Accept", "text/html")]
    data = enc(headers).data
    assert data[0]["items"] == ["Authorization", "***"]
    assert data[1]["items"] == ["Accept", "text/html"]
    assert enc(("set_password", "pw")).data["items"] == ["set_password", "***"]


def test_custom_mask_keys_and_mask_text() -> None:
    data = enc({"pin": 1234, "password": "x"}, mask_keys=("pin",), mask="[hidden]").data
    assert data == {"pin": "[hidden]", "password": "x"}


# --------------------------------------------------------------------------- caps


def test_depth_cap_marks_truncated() -> None:
    value: Any = "leaf"
    for _ in range(10):
        value = [value]
    result = enc(value, max_depth=3)
    assert result.truncated
    assert result.data == [[["<list of 1 (max depth)>"]]]
    assert enc([[["leaf"]]], max_depth=3).truncated is False


def test_item_cap_marks_truncated_for_every_container_kind() -> None:
    for value in (list(range(100)), tuple(range(100)), set(range(100)), collections.deque(range(100))):
        result = enc(value, max_items=10)
        assert result.truncated
        items = result.data if isinstance(result.data, list) else result.data["items"]
        assert len(items) == 11 and items[-1] == "<+90 more>"
    result = enc({str(i): i for i in range(100)}, max_items=10)
    assert result.truncated and len(result.data) == 11
    assert result.data["<truncated>"] == "<+90 more>"
    assert not enc(list(range(10)), max_items=10).truncated


def test_string_cap_marks_truncated() -> None:
    result = enc("x" * 50, max_string=10)
    assert result.truncated
    assert result.data == "x" * 10 + "...<+40 chars>"
    assert not enc("x" * 10, max_string=10).truncated


def test_byte_budget_stops_the_walk_and_marks_truncated() -> None:
    value = [{"name": "n" * 900, "i": i} for i in range(50)]
    result = enc(value, max_bytes=5000)
    assert result.truncated
    assert len(json.dumps(result.data)) <= 5000 + SLACK
    assert not enc(value[:2], max_bytes=5000).truncated


def test_a_million_element_list_is_bounded() -> None:
    value = list(range(1_000_000))
    result = enc(value)
    assert result.truncated
    assert len(result.data) == 51 and result.data[-1] == "<+999950 more>"
    result = enc({i: i for i in range(1_000_000)})
    assert result.truncated and len(result.data) == 51


def test_a_100_mb_string_encodes_with_bounded_output() -> None:
    value = "s" * 100_000_000
    result = enc(value)
    assert result.truncated
    assert len(json.dumps(result.data)) <= 64 * 1024 + SLACK
    assert result.data.startswith("s" * 1000) and result.data.endswith("<+99999000 chars>")


def test_a_100_mb_bytes_object_encodes_with_bounded_output() -> None:
    for value in (b"\xff" * 100_000_000, bytearray(100_000_000), memoryview(b"b" * 100_000_000)):
        result = enc({"payload": value})
        assert result.truncated
        payload = result.data["payload"]
        assert payload["len"] == 100_000_000
        assert payload["__type__"] in ("bytes", "bytearray", "memoryview")
        assert len(json.dumps(result.data)) <= 64 * 1024 + SLACK


def test_many_big_strings_stay_within_the_byte_budget() -> None:
    for text in ("a" * 5000, "é" * 5000, "\U0001f600" * 5000):
        value = [[text] * 50] * 50
        result = enc(value)
        assert result.truncated
        assert len(json.dumps(result.data)) <= 64 * 1024 + SLACK


def test_slow_iteration_is_stopped_by_the_time_budget() -> None:
    class Slow:
        def __iter__(self) -> Iterator[int]:
            for i in range(100_000):
                time.sleep(0.001)
                yield i

    result = enc(Slow(), max_items=1_000_000, time_budget_s=0.02)
    assert result.truncated
    assert result.data["items"][-1] == "<more>"


def test_time_budget_covers_the_whole_walk() -> None:
    class SlowRepr:
        __slots__ = ()

        def __repr__(self) -> str:
            time.sleep(0.002)
            return "slow"

    result = enc([SlowRepr() for _ in range(1000)], max_items=1000, time_budget_s=0.02)
    assert result.truncated
    assert "<...>" in result.data or result.data[-1].startswith("<+")


# --------------------------------------------------------------------------- cycles


def test_cycles_are_marked() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    assert enc(loop).data == [1, "<cycle>"]

    d: dict[str, Any] = {}
    d["self"] = d
    assert enc(d).data == {"self": "<cycle>"}

    class Node:
        def __init__(self) -> None:
            self.next: Any = None

    a, b = Node(), Node()
    a.next, b.next = b, a
    assert fields(fields(enc(a).data)["next"])["next"] == "<cycle>"


def test_shared_values_that_are_not_cycles_are_shown_each_time() -> None:
    shared = [1, 2]
    assert enc([shared, shared]).data == [[1, 2], [1, 2]]


# --------------------------------------------------------------------------- hostile objects


def test_an_object_whose_repr_raises() -> None:
    class BadRepr:
        __slots__ = ("x",)

        def __repr__(self) -> str:
            raise RuntimeError("no repr for you")

    result = enc({"v": BadRepr()})
    assert result.data["v"]["__type__"].endswith("BadRepr")
    assert "repr failed: RuntimeError" in result.data["v"]["repr"]


def test_an_object_whose_repr_raises_a_recursion_error() -> None:
    class Recursive:
        __slots__ = ()

        def __repr__(self) -> str:
            return repr(self)

    assert "repr failed: RecursionError" in enc(Recursive()).data["repr"]


def test_an_object_whose_getattribute_raises() -> None:
    class Hostile:
        def __init__(self) -> None:
            self.visible = 1

        def __getattribute__(self, name: str) -> Any:
            raise RuntimeError(name)

        def __getattr__(self, name: str) -> Any:
            raise RuntimeError(name)

    result = enc({"h": Hostile(), "pair": (Hostile(), 1), Hostile(): 2})
    assert fields(result.data["h"]) == {"visible": 1}
    json.dumps(result.data)


def test_a_property_that_raises_is_shown_as_an_error() -> None:
    class WithProperty:
        __slots__ = ("_x",)

        def __init__(self) -> None:
            self._x = 1

    @dataclasses.dataclass
    class DC:
        a: int

        @property
        def b(self) -> int:
            raise ValueError

    assert fields(enc(WithProperty()).data) == {"_x": 1}
    assert fields(enc(DC(1)).data) == {"a": 1}


def test_containers_whose_len_or_iter_raise() -> None:
    class BadLen:
        def __len__(self) -> int:
            raise ValueError("len")

        def __iter__(self) -> Iterator[int]:
            return iter([1, 2])

    class BadIter:
        def __len__(self) -> int:
            return 3

        def __iter__(self) -> Iterator[int]:
            raise ValueError("iter")

    class BadMidway:
        def __iter__(self) -> Iterator[int]:
            yield 1
            raise KeyError("midway")

    assert enc(BadLen()).data["items"] == [1, 2]
    assert enc(BadIter()).data["items"] == ["<error: ValueError>"]
    assert enc(BadMidway()).data["items"] == [1, "<error: KeyError>"]


def test_a_mapping_whose_items_raise() -> None:
    class BadMapping(Mapping[str, int]):
        def __getitem__(self, key: str) -> int:
            raise KeyError(key)

        def __len__(self) -> int:
            return 1

        def __iter__(self) -> Iterator[str]:
            raise OSError("gone")

    data = enc(BadMapping()).data
    assert data["__type__"] == "BadMapping"
    json.dumps(data)


def test_repr_is_called_at_most_once_per_object() -> None:
    calls = []

    class Counted:
        __slots__ = ()

        def __repr__(self) -> str:
            calls.append(1)
            return "counted"

    one = Counted()
    result = enc([one, one, {"k": one}, (one,)])
    assert len(calls) == 1
    assert result.data[0] == {"__type__": "Counted", "repr": "counted"}


def test_a_huge_repr_is_clipped() -> None:
    class Huge:
        __slots__ = ()

        def __repr__(self) -> str:
            return "r" * 10_000_000

    result = enc(Huge())
    assert result.truncated
    assert len(result.data["repr"]) < 1100


def test_generators_and_iterators_are_never_consumed() -> None:
    gen = (i for i in range(3))
    it = iter([1, 2, 3])
    enc([gen, it])
    assert list(gen) == [0, 1, 2]
    assert list(it) == [1, 2, 3]


def test_futures_are_shown_by_repr_not_iterated() -> None:
    loop = asyncio.new_event_loop()
    try:
        fut = loop.create_future()
        data = enc({"f": fut}).data
        assert data["f"] == {"__type__": "Future", "repr": "<Future pending>"}
        assert not fut.done()
    finally:
        loop.close()


def test_a_dict_property_or_class_property_that_raises() -> None:
    class Odd:
        def __init__(self) -> None:
            self.a = 1

        @property  # type: ignore[misc]
        def __class__(self) -> type:
            raise RuntimeError

        @property
        def __dict__(self) -> dict[str, Any]:  # type: ignore[override]
            raise RuntimeError

    data = enc(Odd()).data
    assert data["__type__"] == "Odd" and "repr" in data


def test_str_subclass_with_hostile_methods() -> None:
    class S(str):
        def __getitem__(self, item: Any) -> str:
            raise RuntimeError

        def __len__(self) -> int:
            raise RuntimeError

    assert enc({S("password"): S("x"), "k2": S("plain")}).data == {"password": "***", "k2": "plain"}


# --------------------------------------------------------------------------- values


def test_nan_and_infinite_floats_become_strings() -> None:
    result = enc([float("nan"), float("inf"), float("-inf"), 1.5])
    assert result.data == ["NaN", "Infinity", "-Infinity", 1.5]
    json.dumps(result.data, allow_nan=False)


def test_huge_ints_are_summarised() -> None:
    data = enc([10**1000, -(2**2000), 2**64]).data
    assert data[0]["__type__"] == "int" and data[0]["negative"] is False
    assert data[1]["bits"] == 2001 and data[1]["negative"] is True
    assert data[2] == 2**64


def test_scalar_types() -> None:
    class Color(enum.Enum):
        RED = "r"

    class Level(enum.IntEnum):
        HIGH = 3

    class Pair(NamedTuple):
        token: str
        name: str

    data = enc(
        {
            "enum": Color.RED,
            "intenum": Level.HIGH,
            "when": datetime.datetime(2024, 1, 2, 3, 4, 5),
            "day": datetime.date(2024, 1, 2),
            "at": datetime.time(3, 4),
            "took": datetime.timedelta(seconds=1.5),
            "amount": decimal.Decimal("1.10"),
            "err": ValueError("boom"),
            "pair": Pair("t", "n"),
            "ordered": collections.OrderedDict(a=1),
            "bytes": b"ab\x00",
            "none": None,
            "yes": True,
        }
    ).data
    assert data["enum"] == {"__type__": "Color", "name": "RED", "value": "r"}
    assert data["intenum"] == {"__type__": "Level", "name": "HIGH", "value": 3}
    assert data["when"] == {"__type__": "datetime", "iso": "2024-01-02T03:04:05"}
    assert data["day"] == {"__type__": "date", "iso": "2024-01-02"}
    assert data["at"] == {"__type__": "time", "iso": "03:04:00"}
    assert data["took"] == {"__type__": "timedelta", "seconds": 1.5}
    assert data["amount"] == {"__type__": "Decimal", "value": "1.10"}
    assert data["err"] == {"__type__": "ValueError", "message": "boom"}
    assert data["pair"] == {"__type__": "Pair", "fields": {"token": "***", "name": "n"}}
    assert data["ordered"] == {"__type__": "OrderedDict", "items": {"a": 1}}
    assert data["bytes"] == {"__type__": "bytes", "len": 3, "preview": "b'ab\\x00'"}
    assert data["none"] is None and data["yes"] is True


def test_pids_refs_and_callables_are_shown_by_repr() -> None:
    async def coro() -> None:
        pass

    c = coro()
    try:
        data = enc([Pid(0, 42), Ref(0, 7), len, test_scalar_types, json, c, int, range(10**9)]).data
    finally:
        c.close()
    assert data[0] == {"__type__": "Pid", "repr": "<0.42.0>"}
    assert data[1] == {"__type__": "Ref", "repr": "#Ref<0.7>"}
    assert data[2]["repr"] == "<built-in function len>"
    assert data[3]["repr"].startswith("<function test_scalar_types")
    assert data[4]["__type__"] == "module"
    assert data[5]["__type__"] == "coroutine"
    assert data[6] == {"__type__": "type", "repr": "<class 'int'>"}
    assert data[7]["repr"] == "range(0, 1000000000)"


def test_dict_keys_are_stringified_without_collisions() -> None:
    data = enc({1: "a", "1": "b", None: 0, (1, "x"): 2, b"k": 3, 2.5: 4}).data
    assert data == {"1": "a", "1 #2": "b", "None": 0, "(1, 'x')": 2, "b'k'": 3, "2.5": 4}


def test_a_user_dict_with_a_type_key_is_wrapped() -> None:
    assert enc({"__type__": "fake"}).data == {"__type__": "dict", "items": {"__type__": "fake"}}


def test_lone_surrogates_are_made_utf8_safe() -> None:
    data = enc({"k\udc80": "v\udcff"}).data
    json.dumps(data, ensure_ascii=False).encode("utf-8")


# --------------------------------------------------------------------------- opt-out / custom


def test_opt_out_with_a_class_attribute() -> None:
    class Vault:
        __observer_inspect__ = False

        def __init__(self) -> None:
            self.gold = 1

    class SubVault(Vault):
        pass

    assert enc({"v": Vault(), "s": SubVault()}).data == {"v": "<Vault (hidden)>", "s": "<SubVault (hidden)>"}


def test_observer_fields_method_replaces_the_attributes() -> None:
    class Account:
        def __init__(self) -> None:
            self.balance = 10
            self.internal = object()

        def __observer_fields__(self) -> Mapping[str, Any]:
            return {"balance": self.balance, "pin_token": "t"}

    assert enc(Account()).data == {"__type__": "Account", "fields": {"balance": 10, "pin_token": "***"}}


def test_register_type_hides_inspects_or_extracts() -> None:
    class Plain:
        def __init__(self) -> None:
            self.a = 1

    class Vault:
        __observer_inspect__ = False

        def __init__(self) -> None:
            self.gold = 2

    redactor = Redactor()
    redactor.register_type(Plain, inspect=False)
    redactor.register_type(Vault, inspect=True)
    assert redactor.encode(Plain()).data == "<Plain (hidden)>"
    assert redactor.encode(Vault()).data == {"__type__": "Vault", "fields": {"gold": 2}}

    redactor.register_type(Plain, fields=lambda p: {"double": p.a * 2, "secret": 1})
    result = redactor.encode(Plain())
    assert result.data == {"__type__": "Plain", "fields": {"double": 2, "secret": "***"}}
    assert result.masked == 1

    redactor.register_type(Plain)  # neither argument: back to the default
    assert redactor.encode(Plain()).data == {"__type__": "Plain", "fields": {"a": 1}}


def test_register_type_overrides_observer_fields_and_applies_to_subclasses() -> None:
    class Base:
        def __observer_fields__(self) -> Mapping[str, Any]:
            return {"from": "method"}

    class Child(Base):
        pass

    redactor = Redactor()
    redactor.register_type(Base, fields=lambda _o: {"from": "registry"})
    assert fields(redactor.encode(Child()).data) == {"from": "registry"}


def test_a_fields_extractor_that_raises() -> None:
    class Thing:
        pass

    def broken(_o: Any) -> Mapping[str, Any]:
        raise RuntimeError("nope")

    redactor = Redactor()
    redactor.register_type(Thing, fields=broken)
    assert redactor.encode(Thing()).data == {"__type__": "Thing", "error": "<fields failed: RuntimeError>"}


def test_module_level_encode_uses_the_policy() -> None:
    assert encode([1, 2, 3], RedactionPolicy(max_items=1)).data == [1, "<+2 more>"]


# --------------------------------------------------------------------------- properties

SENTINEL = "S3NT1NEL-value"
secret_keys = st.sampled_from(["password", "apiKey", "x_auth_token", "Cookie", "SESSION_ID", "dbPassword"])
plain_keys = st.text(max_size=12).filter(lambda k: not is_secret_name(k))
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(),
    st.binary(),
    st.decimals(),
    st.datetimes(),
)


def _values(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=8),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(plain_keys, children, max_size=6),
        st.dictionaries(st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans()), children, max_size=3),
        st.tuples(secret_keys, children).map(lambda kv: {kv[0]: SENTINEL, "ok": kv[1]}),
    )


values = st.recursive(leaves, _values, max_leaves=40)


def _secret_keys_are_masked(data: Any) -> None:
    if isinstance(data, dict):
        for key, value in data.items():
            if is_secret_name(key):
                assert value == "***", (key, value)
            else:
                _secret_keys_are_masked(value)
    elif isinstance(data, list):
        for item in data:
            _secret_keys_are_masked(item)


@settings(max_examples=300, deadline=None)
@given(values)
def test_any_value_encodes_to_json_with_secrets_masked(value: Any) -> None:
    result = enc(value)
    text = json.dumps(result.data)
    assert SENTINEL not in text
    _secret_keys_are_masked(result.data)


@settings(max_examples=200, deadline=None)
@given(values, st.integers(min_value=0, max_value=4), st.integers(min_value=0, max_value=5))
def test_any_value_respects_small_caps(value: Any, depth: int, items: int) -> None:
    result = enc(value, max_depth=depth, max_items=items, max_string=20, max_bytes=600)
    assert len(json.dumps(result.data)) <= 600 + SLACK
    assert SENTINEL not in json.dumps(result.data)


# --------------------------------------------------------------------------- redact_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("login password=hunter2 user=bob", "login password=*** user=bob"),
        ("api_key: abc123, next", "api_key: ***, next"),
        ('{"token": "a\\"b", "user": "bob"}', '{"token": "***", "user": "bob"}'),
        ("{'secret': 'x y z', 'n': 1}", "{'secret': '***', 'n': 1}"),
        ("Foo(dbPassword='pw')", "Foo(dbPassword='***')"),
        ("Authorization: Bearer eyJhbGc.x.y", "Authorization: Bearer ***"),
        ("GET /x?access_token=abc&page=2", "GET /x?access_token=***&page=2"),
        ("postgres://bob:s3cret@db:5432/app", "postgres://bob:***@db:5432/app"),
        ("KeyError: password=abc", "KeyError: password=***"),
        ("KeyError: 'user'", "KeyError: 'user'"),
        ("monkey=banana keyboard: qwerty", "monkey=banana keyboard: qwerty"),
        ('password="unterminated', 'password="***'),
        ("nothing to see", "nothing to see"),
    ],
)
def test_redact_text_masks_obvious_secrets(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def test_redact_text_handles_big_and_odd_input() -> None:
    big = "a" * 1_000_000 + " token=x " + "b=" * 100_000
    out = redact_text(big)
    assert "token=***" in out and len(out) == len(big) + 2
    assert redact_text(123) == "<not text>"  # type: ignore[arg-type]
    assert redact_text("pin=1", RedactionPolicy(mask_keys=("pin",), mask="#")) == "pin=#"
