"""The fast path of ``scale.py``: many CONNECTED platforms written into the hub's SQLite store before it starts.

Registering 10,000 platforms through the admin API and the credentials handshake takes minutes (``scale.py``
times a few handshakes at every size to show how long). These platforms are what a handshake leaves behind
(hub/credentials.py ``_save_registration``): CONNECTED, their parties CONNECTED with business details, Token C
hashed, Token B sealed, the partner's versions URL, OCPI 2.2.1 and its endpoints, written with the store's own
``save_platform`` (party reservations included) and ``routing.platform.Platform``, under the Fernet key the hub
is then started with (``HUB_SECRET_KEYS``). The hub loads them like any other at start.

Bench only: imports the hub, unlike the load generator and the fake partners.
"""

from __future__ import annotations

import hashlib
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from hub.sealing import Sealer
from hub.store.sqlite import SqliteStore
from routing.platform import ConnectionStatus, Endpoint, Party, Platform, hash_token, utcnow

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
CPO_COUNTRY, EMSP_COUNTRY = "XC", "XE"  # the extra platforms' parties: never those of onboard.py


def party_id(n: int) -> str:
    """Three base-36 characters (OCPI CiString(3)): 46,656 distinct parties per country code."""
    if not 0 <= n < 36 ** 3:
        raise ValueError(f"party number {n} does not fit in three characters")
    return ALPHABET[n // 1296] + ALPHABET[n // 36 % 36] + ALPHABET[n % 36]


@dataclass(frozen=True)
class Extra:
    """Extra platform number ``n``: a CPO and an eMSP party, served by the scale receiver under ``/r<n>``."""

    n: int
    seed: str
    port: int

    @property
    def key(self) -> str:
        return f"r{self.n}"

    @property
    def token_b(self) -> str:  # what the hub presents to it (the receiver derives the same)
        return f"B-{self.seed}-{self.key}"

    @property
    def token_c(self) -> str:  # what it presents to the hub (preloaded ones; a handshake gets its own)
        return "C-" + hashlib.sha256(f"{self.seed}:{self.key}".encode()).hexdigest()[:40]

    @property
    def cpo(self) -> tuple[str, str]:
        return CPO_COUNTRY, party_id(self.n)

    @property
    def emsp(self) -> tuple[str, str]:
        return EMSP_COUNTRY, party_id(self.n)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.key}/ocpi"

    @property
    def versions_url(self) -> str:
        return f"{self.base}/versions"

    def roles(self) -> list[tuple[str, str, str]]:
        return [(*self.cpo, "CPO"), (*self.emsp, "EMSP")]

    def platform(self) -> Platform:
        """The record a 2.2.1 credentials handshake with this partner would have saved."""
        now = utcnow()
        details = {"name": f"Scale partner {self.n}"}
        parties = [Party(cc, pid, role, ConnectionStatus.CONNECTED, dict(details), now)
                   for cc, pid, role in self.roles()]
        v221 = f"{self.base}/2.2.1"
        endpoints = [Endpoint("credentials", "SENDER", f"{v221}/credentials"),
                     Endpoint("locations", "SENDER", f"{v221}/sender/locations"),
                     Endpoint("locations", "RECEIVER", f"{v221}/receiver/locations")]
        return Platform(id=uuid.uuid4().hex[:12], name=f"Scale partner {self.n}", status=ConnectionStatus.CONNECTED,
                        parties=parties, inbound_token_hash=hash_token(self.token_c), outbound_token=self.token_b,
                        versions_url=self.versions_url, version="2.2.1", endpoints=endpoints, created_at=now,
                        updated_at=now, last_seen=now, revision=time.time_ns() // 1000)


def copy_sqlite(src: Path, dst: Path) -> None:
    """The closed database file (and a WAL, should one be left) into ``dst``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{src}{suffix}").exists():
            shutil.copyfile(f"{src}{suffix}", f"{dst}{suffix}")


class Templates:
    """One growing SQLite file; a copy of it is taken at each size, so 10,000 platforms are written once in all."""

    def __init__(self, path: Path, secret_key: bytes) -> None:
        self.path = path
        self.sealer = Sealer([secret_key])
        self.written = 0  # extras saved so far (numbers first .. first + written - 1)

    async def copy_with(self, extras: list[Extra], dst: Path) -> float:
        """A store at ``dst`` holding exactly ``extras`` (the same list, or a longer one, at each call): the ones not
        written yet are added to the template, which is then copied. Returns the seconds spent saving."""
        if len(extras) < self.written:  # fewer than the template holds: a store of their own
            return await save_all(extras, dst, self.sealer)
        spent = await save_all(extras[self.written:], self.path, self.sealer)
        self.written = len(extras)
        copy_sqlite(self.path, dst)
        return spent


async def save_all(extras: list[Extra], path: Path, sealer: Sealer) -> float:
    """Each platform saved with the store's own ``save_platform``; returns the seconds it took."""
    path.parent.mkdir(parents=True, exist_ok=True)
    store = SqliteStore(str(path), sealer=sealer)
    await store.open()
    started = time.perf_counter()
    try:
        for extra in extras:
            await store.save_platform(extra.platform())
    finally:
        await store.close()
    return time.perf_counter() - started
