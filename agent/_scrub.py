"""Deciding what is secret: the masking rule, for names and for free text.

:class:`Scrubber` answers "is this name secret?" for one :class:`RedactionPolicy`; it is
plugged into the serializer (:mod:`agent._serialize`), which asks it about every dict
key, attribute and field name it meets.  :func:`redact_text` applies the same rule to
free text (tracebacks, exit reasons).  Nothing here walks values.

Masking rule
------------
A dict key, attribute name or field name is *secret* when, split into word parts, it
contains one of ``mask_keys`` as whole word parts:

* Names are split at any non-alphanumeric character (``_ - .`` space...), at camelCase
  humps (``apiKey`` -> ``api key``; ``APIKey`` -> ``api key``) and between letters and
  digits (``password2`` -> ``password 2``), then lower-cased.  Each ``mask_keys`` entry
  is split the same way, so ``"session_id"`` matches ``sessionId``, ``SESSION-ID``,
  ``user_session_id``.
* The entry's parts must appear as a contiguous run of the name's parts; the last one
  may carry a plural ``s`` (``tokens``, ``cookies``, ``credentials``).
* Single-word entries of 5 or more letters also match as the *end* of a name part, to
  catch unsplit compounds: ``accesstoken``, ``dbpassword``, ``clientsecret``.  Shorter
  entries (``key``, ``auth``, ``card``) must be whole parts, so ``monkey``, ``keyboard``,
  ``hotkey``, ``author``, ``oauth``, ``cardinality``, ``discard`` are *not* masked, nor
  are ``tokenizer``, ``secretary``, ``passage``.
* A name whose last part is ``error(s)``, ``exception`` or ``warning(s)`` is never
  secret (``KeyError``, ``token_error``): it names a failure, not a credential.
* Only the first 256 characters of a name are considered.

The rule errs on the side of masking: ``primary_key``, ``max_tokens``, ``is_private``
are masked.  A masked value is replaced by ``policy.mask`` without being looked at
(whatever its type), and counted in ``Encoded.masked``.  Besides names, a 2-tuple whose
first element is a secret name (``("Authorization", "Bearer x")``,
``("set_password", pw)``) has its second element masked.  String *values* are not
scanned; use :func:`redact_text` for free text.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "RedactionPolicy",
    "Scrubber",
    "is_secret_name",
    "name_parts",
    "redact_text",
]

_FATAL: Final = (KeyboardInterrupt, SystemExit)
_MAX_NAME: Final = 256
_NOT_SECRET_TAIL: Final = frozenset({"error", "errors", "exception", "exceptions", "warning", "warnings"})
_SUFFIX_MIN: Final = 5


@dataclass(frozen=True)
class RedactionPolicy:
    """What to mask (the rule in this module's docstring) and how much to show (the
    limits :class:`agent._serialize.Serializer` honours).

    Negative limits count as 0; ``max_depth`` is capped at 64.
    """

    mask_keys: tuple[str, ...] = (
        "password",
        "passwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "key",
        "cookie",
        "auth",
        "authorization",
        "credential",
        "private",
        "session_id",
        "card",
    )
    max_depth: int = 6
    max_items: int = 50
    max_string: int = 1000
    max_bytes: int = 64 * 1024
    time_budget_s: float = 0.05
    mask: str = "***"


# --------------------------------------------------------------------------- names

_WORD_RE: Final = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def name_parts(name: str) -> tuple[str, ...]:
    """Split a name into lower-case word parts (see the masking rule); ``()`` for a non-str."""
    if not isinstance(name, str):
        return ()
    head = str.__getitem__(name, slice(0, _MAX_NAME))
    return tuple(w.lower() for w in _WORD_RE.findall(head))


class _Matcher:
    """The compiled form of ``mask_keys``."""

    __slots__ = ("_multi", "_singles", "_suffix")

    def __init__(self, mask_keys: tuple[str, ...]) -> None:
        singles: set[str] = set()
        multi: list[tuple[str, ...]] = []
        suffixes: list[str] = []
        for key in mask_keys:
            parts = name_parts(key) if isinstance(key, str) else ()
            if len(parts) == 1:
                singles.update((parts[0], parts[0] + "s"))
                if len(parts[0]) >= _SUFFIX_MIN:
                    suffixes.append(parts[0])
            elif parts:
                multi.append(parts)
        self._singles = frozenset(singles)
        self._multi = tuple(multi)
        self._suffix = (
            re.compile("(?:" + "|".join(re.escape(x) for x in suffixes) + ")s?$", re.ASCII) if suffixes else None
        )

    def match_parts(self, parts: tuple[str, ...]) -> bool:
        if not parts or parts[-1] in _NOT_SECRET_TAIL:
            return False
        singles = self._singles
        for word in parts:
            if word in singles:
                return True
        suffix = self._suffix
        if suffix is not None:
            for word in parts:
                if suffix.search(word):
                    return True
        n = len(parts)
        for entry in self._multi:
            m = len(entry)
            last = entry[-1]
            for i in range(n - m + 1):
                if parts[i + m - 1] in (last, last + "s") and parts[i : i + m - 1] == entry[:-1]:
                    return True
        return False


@functools.lru_cache(maxsize=32)
def _matcher(mask_keys: tuple[str, ...]) -> _Matcher:
    return _Matcher(mask_keys)


def is_secret_name(name: str, policy: RedactionPolicy = RedactionPolicy()) -> bool:
    """True if ``name`` names a secret under ``policy.mask_keys`` (never raises)."""
    try:
        return _matcher(tuple(policy.mask_keys)).match_parts(name_parts(name))
    except _FATAL:
        raise
    except BaseException:
        return True  # when in doubt, mask


class Scrubber:
    """The masking rule compiled for one :class:`RedactionPolicy`: what the serializer
    plugs in to decide which values to mask, and what to show instead (``mask``).

    Thread-safe: :meth:`is_secret` may run on any thread (its cache is a plain dict of
    answers; a race at worst computes an answer twice).
    """

    _CACHE_MAX: Final = 4096

    def __init__(self, policy: RedactionPolicy = RedactionPolicy()) -> None:
        self.mask: str = str(policy.mask) if isinstance(policy.mask, str) else "***"
        self._matcher = _matcher(tuple(policy.mask_keys))
        self._cache: dict[str, bool] = {}

    def is_secret(self, name: str) -> bool:
        """True if ``name`` (a str; only its first 256 characters count) names a secret."""
        head = str.__getitem__(name, slice(0, _MAX_NAME))
        cached = self._cache.get(head)
        if cached is not None:
            return cached
        result = self._matcher.match_parts(name_parts(head))
        if len(self._cache) >= self._CACHE_MAX:
            self._cache.clear()
        self._cache[head] = result
        return result


# --------------------------------------------------------------------------- free text

_TEXT_KEY_RE: Final = re.compile(
    r"""(?<![\w.\-])(?P<q>["']?)(?P<key>[A-Za-z_][\w.\-]{0,63})(?P=q)[ \t]{0,4}[:=][ \t]{0,4}"""
)
_TEXT_VALUE_RE: Final = re.compile(
    r"""(?P<dq>"(?:[^"\\\n]|\\.)*"?)"""
    r"""|(?P<sq>'(?:[^'\\\n]|\\.)*'?)"""
    r"""|(?P<scheme>(?:Bearer|Basic|Token|Digest|bearer|basic|token)[ \t]+)?(?P<bare>[^\s,;&(){}\[\]"'=<>]+)"""
)
_URL_CRED_RE: Final = re.compile(r"(?<![\w+.\-])(?P<pre>[A-Za-z][\w+.\-]{0,31}://[^\s/:@]{1,256}:)[^\s/@]{1,256}(?=@)")


def redact_text(text: str, policy: RedactionPolicy = RedactionPolicy()) -> str:
    """Mask obvious secrets in free text (tracebacks, log lines).  Never raises.

    Masked forms, where *key* is a secret name under the masking rule (module docstring):

    * ``key=value``, ``key: value``, ``key = "value"``, ``"key": "value"``,
      ``'key': 'value'`` — the value (up to whitespace or one of ``, ; & ( ) [ ] { } < >``,
      or to the closing quote) becomes ``policy.mask``; quotes are kept, and so is an
      HTTP auth scheme (``Authorization: Bearer ***``);
    * ``scheme://user:password@host`` — the password.

    It is a heuristic: a secret not introduced by a secret-looking key (``login bob
    hunter2``) is not found, and values of non-secret keys are scanned for further
    ``key=value`` pairs.  Runs in time linear in ``len(text)``.
    """
    try:
        if not isinstance(text, str):
            return "<not text>"
        text = str.__str__(text)
        if ":" not in text and "=" not in text:
            return text  # every masked form has one (most exit reasons: "boom", "killed")
        matcher = _matcher(tuple(policy.mask_keys))
        mask = policy.mask if isinstance(policy.mask, str) else "***"
        text = _URL_CRED_RE.sub(lambda m: m.group("pre") + mask, text)
        out: list[str] = []
        seen: dict[str, bool] = {}
        last = pos = 0
        while True:
            m = _TEXT_KEY_RE.search(text, pos)
            if m is None:
                break
            pos = m.end()
            key = m.group("key")
            secret = seen.get(key)
            if secret is None:
                secret = seen[key] = matcher.match_parts(name_parts(key))
            if not secret:
                continue
            v = _TEXT_VALUE_RE.match(text, pos)
            if v is None:
                continue
            quoted = v.group("dq") or v.group("sq")
            if quoted:
                q = quoted[0]
                closed = len(quoted) > 1 and quoted.endswith(q)
                replacement = q + mask + (q if closed else "")
            else:
                replacement = (v.group("scheme") or "") + mask
            out.append(text[last:pos])
            out.append(replacement)
            last = pos = v.end()
        out.append(text[last:])
        return "".join(out)
    except _FATAL:
        raise
    except BaseException:
        return "<redaction failed>"
