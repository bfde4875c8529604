"""Secrets at rest: the hub's outbound tokens (Token B/C) and the Sessions and CDRs kept for catch-up sealed with
Fernet, token uids of route hints keyed-hashed.

Keys come from ``HUB_SECRET_KEYS`` (comma-separated Fernet keys): the first seals, every one opens, so adding a
new key in front and re-sealing (done at every start, ``reseal_secrets``) is key rotation. Without the setting the
embedded store keeps a generated key next to its file (mode 0600, as the admin token); an in-memory store gets a
key for this process; MongoDB refuses to start, because its workers could not share a generated key.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hub.settings import Settings

KEY_FILE_NAME: Final = "secret-key"
_HINT_INFO: Final = b"ocpi-hub route hints v1"
_CONSOLE_INFO: Final = b"ocpi-hub console sessions v1"
_KEY_ID_INFO: Final = b"ocpi-hub key id v1"


class SecretKeyError(RuntimeError):
    """The hub cannot get a usable key: start-up stops with this one-line message."""


class Sealer:
    """Seals and opens short secrets; derives the keyed hash of route-hint keys. Keys: newest first."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise SecretKeyError("no secret key given")
        fernets = []
        for i, key in enumerate(keys):
            try:
                fernets.append(Fernet(key))
            except ValueError as exc:
                raise SecretKeyError(f"secret key #{i + 1} is not a Fernet key (32 url-safe base64 bytes): "
                                     "make one with `ocpi-hub secret-key`") from exc
        self._primary = fernets[0]
        self._all = MultiFernet(fernets)
        # One hint key per secret key, newest first: hints are written under the first, found under any.
        self.hint_keys: tuple[bytes, ...] = tuple(_derive_hint_key(k) for k in keys)
        # The console's session cookies: Fernet under a key of their own, derived from the first secret key (a key
        # rotation therefore ends every console session; they are short-lived anyway).
        self.console_key: bytes = _derive(keys[0], _CONSOLE_INFO)
        # Names the sealing key beside what it sealed in bulk (kept Sessions and CDRs), so a rotation finds what to
        # re-seal with an indexed query instead of trying to open every record. One-way: it reveals nothing of the key.
        self.key_id: str = _derive(keys[0], _KEY_ID_INFO)[:8].hex()

    @classmethod
    def generate(cls) -> Sealer:
        return cls([Fernet.generate_key()])

    def seal(self, secret: str) -> str:
        return self._primary.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._all.decrypt(sealed.encode()).decode()
        except InvalidToken as exc:
            raise SecretKeyError("a stored secret opens with none of HUB_SECRET_KEYS: was a key removed before "
                                 "everything was re-sealed with the new one?") from exc

    def sealed_with_primary(self, sealed: str) -> bool:
        """False when ``sealed`` needs re-sealing: made with an older key (rotation still under way)."""
        try:
            self._primary.decrypt(sealed.encode())
        except InvalidToken:
            return False
        return True


def _derive(fernet_key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(fernet_key)


def _derive_hint_key(fernet_key: bytes) -> bytes:
    return _derive(fernet_key, _HINT_INFO)


@functools.cache
def process_sealer() -> Sealer:
    """A key for this process only: stores nobody will reopen later (``:memory:``, tests)."""
    return Sealer.generate()


def parse_keys(value: str) -> list[bytes]:
    return [k.strip().encode() for k in value.split(",") if k.strip()]


def load_sealer(settings: Settings) -> Sealer:
    """The sealer of this hub's store, from settings, the kept key file, or a fresh key (see the module doc)."""
    if settings.secret_keys:
        return Sealer(parse_keys(settings.secret_keys))
    if settings.mongo_url:
        raise SecretKeyError("HUB_SECRET_KEYS is required with HUB_MONGO_URL (every worker must use the same key); "
                             "make one with `ocpi-hub secret-key`")
    if settings.sqlite_path == ":memory:":
        return process_sealer()
    return Sealer([_read_or_create_key_file(settings.data_dir / KEY_FILE_NAME)])


def _read_or_create_key_file(path: Path) -> bytes:
    """Read the kept key, or create it with mode 0600; two processes creating at once both end with the winner's."""
    with contextlib.suppress(FileNotFoundError):
        return _read_key_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key_file(path)
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
    return key


def _read_key_file(path: Path) -> bytes:
    key = path.read_bytes().strip()
    if not key:
        raise SecretKeyError(f"{path} is empty: restore it from a backup, or set HUB_SECRET_KEYS")
    return key
