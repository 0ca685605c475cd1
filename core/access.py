"""Who is acting, and what they may do with a run: the one permission check.

An :class:`Actor` is a nickname (or none: an anonymous visitor) and whether they hold the
instructor key. The rule, enforced by ``jobs.cancel``, ``RunStore.rename`` and
``RunStore.delete`` whatever a page shows:

- a run's owner and the instructor may stop, rename or delete it;
- a run without an owner (made before classroom mode, or by an anonymous visitor) is
  *shared* while the lab has no instructor key, and the instructor's alone once it has one.

Class mode is on when an instructor key is configured: ``LAB_INSTRUCTOR_KEY`` in the web
server's environment, whose hash the server keeps in the store so the command line (given
the same ``LAB_INSTRUCTOR_KEY``) can be checked against it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

KEY_ENV = "LAB_INSTRUCTOR_KEY"
KEY_SETTING = "instructor_key_sha256"
NO_OWNER = "—"  # how a run without an owner is shown


class PermissionDenied(PermissionError):
    """Raised with a message naming the run's owner."""


@dataclass(frozen=True)
class Actor:
    name: str | None = None  # the nickname; None = anonymous
    instructor: bool = False

    def describe(self) -> str:
        who = self.name or "an anonymous visitor"
        return f"{who} (instructor)" if self.instructor else who


ANONYMOUS = Actor()


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def register_key(store) -> None:
    """At web-server start: keep the hash of its LAB_INSTRUCTOR_KEY (or none) in the store."""
    key = os.environ.get(KEY_ENV, "")
    store.set_setting(KEY_SETTING, _hash(key) if key else None)


def configured_hash(store) -> str | None:
    """The class's key hash: the web server's (stored), else this process's environment."""
    stored = store.get_setting(KEY_SETTING)
    if stored:
        return stored
    key = os.environ.get(KEY_ENV, "")
    return _hash(key) if key else None


def class_mode(store) -> bool:
    return configured_hash(store) is not None


def key_matches(store, typed: str | None) -> bool:
    """Is ``typed`` the instructor key? Constant-time compare; False when none is set."""
    expected = configured_hash(store)
    return bool(typed) and expected is not None and hmac.compare_digest(_hash(typed), expected)


def remember_unlock(store, token: str | None) -> None:
    """A nickname that unlocked instructor mode keeps it on reloads and new tabs, for as
    long as the key stays the same (its hash is stored with the nickname)."""
    if token:
        store.set_user_key(token, configured_hash(store))


def token_is_instructor(store, token: str | None) -> bool:
    expected = configured_hash(store)
    stored = store.user_key(token) if token else None
    return bool(stored and expected and hmac.compare_digest(stored, expected))


def cli_actor(store) -> Actor:
    """The command line's actor: LAB_USER, and instructor when LAB_INSTRUCTOR_KEY matches."""
    name = os.environ.get("LAB_USER", "").strip() or None
    if name is not None:
        from core.identity import check_nickname

        name = check_nickname(name)
    return Actor(name, key_matches(store, os.environ.get(KEY_ENV)))


def owner_label(owner: str | None) -> str:
    return owner or NO_OWNER


def can_manage(actor: Actor | None, owner: str | None, class_on: bool) -> bool:
    """May ``actor`` stop, rename or delete a run owned by ``owner``?"""
    actor = actor or ANONYMOUS
    if actor.instructor:
        return True
    if owner is None:
        return not class_on
    return actor.name is not None and actor.name == owner


def check_manage(store, actor: Actor | None, owner: str | None, run_id: str,
                 action: str) -> None:
    """Raise PermissionDenied naming the owner unless ``actor`` may ``action`` the run."""
    if can_manage(actor, owner, class_mode(store)):
        return
    whose = (f"it belongs to {owner}" if owner
             else "it has no owner, and only the instructor manages those")
    raise PermissionDenied(f"you ({(actor or ANONYMOUS).describe()}) may not {action} run "
                           f"{run_id}: {whose}; only its owner or the instructor may")


def can_view(actor: Actor | None, owner: str | None, owners_only: bool) -> bool:
    """Completed runs are the class's to view, unless the instructor made them private."""
    actor = actor or ANONYMOUS
    return not owners_only or actor.instructor or (owner is not None and owner == actor.name)
