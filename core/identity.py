"""Identity without accounts: a nickname per browser, unique in the class.

A student picks a nickname (and types the class code when the instructor set
``LAB_CLASS_CODE``); :func:`register` checks both and returns a random token, which the
browser keeps (a cookie, see the Classroom section of README) and :func:`lookup` maps back
to the nickname. Nicknames are validated here, once, for the web page and the CLI
(``LAB_USER``): letters and digits of any script, spaces, ``-``, ``_``, ``.``, ``'``; never
HTML, markdown, emoji or invisible direction controls. Uniqueness ignores case and Unicode
compatibility forms ("Ana" and "ＡＮＡ" are the same student).
"""

from __future__ import annotations

import hmac
import os
import secrets
import unicodedata

CODE_ENV = "LAB_CLASS_CODE"
MIN_CHARS, MAX_CHARS = 2, 24
PUNCTUATION = " -_.'"
MARKUP = set("<>&*`[]()#~|\\!$:/\"=")


class IdentityError(ValueError):
    """A nickname or class code that cannot be used; the message says why."""


def nickname_problem(raw: str) -> str | None:
    """Why ``raw`` cannot be a nickname, or None when it can (after trimming spaces)."""
    name = (raw or "").strip()
    if not name:
        return "nickname: enter a nickname (2 to 24 characters)"
    if len(name) > MAX_CHARS:
        return f"nickname: {len(name)} characters is too long (allowed {MIN_CHARS} to {MAX_CHARS})"
    if len(name) < MIN_CHARS:
        return f"nickname: too short (allowed {MIN_CHARS} to {MAX_CHARS} characters)"
    cats = {unicodedata.category(c) for c in name}
    if any(c in MARKUP for c in name):
        return ("nickname: must not contain HTML or markdown characters such as < > & * ` "
                "[ ] ( ) # ~ | \\ ! $ : / \" =")
    if cats & {"So", "Sk", "Sm", "Sc"} or any(0x1F000 <= ord(c) <= 0x1FFFF for c in name):
        return "nickname: emoji and symbols are not allowed (letters, digits, space - _ . ')"
    if cats & {"Cf", "Cc", "Co", "Cs", "Cn", "Zl", "Zp"}:
        return ("nickname: must not contain invisible or text-direction control characters "
                "(such as right-to-left overrides)")
    bad = [c for c in name if not (c.isalnum() or c in PUNCTUATION
                                   or unicodedata.category(c).startswith("M"))]
    if bad:
        return (f"nickname: {bad[0]!r} is not allowed (letters and digits of any script, "
                "space - _ . ')")
    if "  " in name:
        return "nickname: one space between words"
    return None


def check_nickname(raw: str) -> str:
    """The trimmed nickname, or IdentityError with the reason."""
    problem = nickname_problem(raw)
    if problem:
        raise IdentityError(problem)
    return unicodedata.normalize("NFC", raw.strip())


def nick_key(name: str) -> str:
    """What must be unique in a class: case- and compatibility-folded."""
    return unicodedata.normalize("NFKC", name).casefold()


def class_code_required() -> bool:
    return bool(os.environ.get(CODE_ENV, ""))


def register(store, raw_nickname: str, code: str = "") -> tuple[str, str]:
    """Check the class code and the nickname, claim it for this class; (token, nickname)."""
    expected = os.environ.get(CODE_ENV, "")
    if expected and not hmac.compare_digest((code or "").strip().encode(), expected.encode()):
        raise IdentityError("class code: that is not this class's code (ask the instructor)")
    name = check_nickname(raw_nickname)
    token = secrets.token_urlsafe(24)
    if not store.add_user(token, name, nick_key(name)):
        raise IdentityError(f"nickname: {name} is already taken in this class; pick another")
    return token, name


def lookup(store, token: str | None) -> str | None:
    """The nickname of a token in the current class; None when unknown (or archived)."""
    if not token:
        return None
    return store.user_by_token(token)
