"""The admin token: how strong it must be, where a generated one is kept, and how the CLI finds it.

A generated token is kept in ``<data dir>/admin-token`` (mode 0600) and reused on the next start, so a restart
does not lock the CLI out. It is written only once the hub is listening and ready: a second ``serve`` that
cannot bind never overwrites the token of the hub that is running. Next to it, ``serve`` leaves a pointer in
``HUB_CONFIG_DIR`` (``admin-token-<port>``: the token file's absolute path, not the token), so the CLI on the
same machine finds the token from any folder (docs/security.md, "Operators").
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from hub.settings import Settings

MIN_LENGTH = 24
MIN_DISTINCT = 8
PLACEHOLDERS = ("change-me", "changeme", "change_me", "replace-me", "replaceme", "example", "placeholder",
                "password", "secret")
LOCAL_HOSTS = frozenset(("127.0.0.1", "localhost", "::1", "0.0.0.0", "::"))


class AdminTokenError(Exception):
    """The admin token cannot be used or found; the message is one line for the operator."""


def weakness(token: str) -> str | None:
    """Why ``token`` is too weak to guard an admin API on the internet, or None when it is strong enough."""
    lowered = token.lower()
    if any(word in lowered for word in PLACEHOLDERS):
        return "it is a placeholder"
    if len(token) < MIN_LENGTH:
        return f"it is shorter than {MIN_LENGTH} characters"
    if len(set(token)) < MIN_DISTINCT:
        return f"it has fewer than {MIN_DISTINCT} different characters"
    return None


def check_configured(settings: Settings) -> None:
    """Refuse a weak ``HUB_ADMIN_TOKEN`` unless ``HUB_ENV=development``."""
    token = settings.admin_token
    if token is None or settings.env == "development":
        return
    why = weakness(token)
    if why:
        raise AdminTokenError(f"HUB_ADMIN_TOKEN is too weak ({why}); use e.g. `openssl rand -base64 32`, or set "
                              "HUB_ENV=development on a machine no one else can reach")


def kept_or_new(settings: Settings) -> tuple[str, bool]:
    """The token a previous start kept in the data dir (if still strong) and True, else a new one (not yet
    written) and False."""
    path = settings.admin_token_path
    try:
        kept = path.read_text().strip()
    except OSError:
        kept = ""
    if kept and weakness(kept) is None:
        return kept, True
    return secrets.token_urlsafe(32), False


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    os.replace(tmp, path)  # readers see the old token or the new one, never half a file


def pointer_path(settings: Settings, port: int) -> Path:
    return Path(settings.config_dir).expanduser() / f"admin-token-{port}"


def keep(settings: Settings, token: str) -> None:
    """Write a generated token (the hub is ready) and the pointer the CLI follows from any folder."""
    path = settings.admin_token_path.resolve()
    _write_private(path, token)
    try:
        pointer = pointer_path(settings, settings.port)
        pointer.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_private(pointer, str(path))
    except OSError:
        pass  # no writable config dir: the CLI still finds the token with HUB_ADMIN_TOKEN or from the data dir


def for_cli(settings: Settings) -> str:
    """``HUB_ADMIN_TOKEN``, else the token file in the data dir, else the one a local hub on HUB_URL's port kept."""
    if settings.admin_token:
        return settings.admin_token
    candidates: list[Path] = []
    url = urlsplit(settings.url)
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
    except ValueError:
        port = None
    if url.hostname in LOCAL_HOSTS and port is not None:
        try:
            candidates.append(Path(pointer_path(settings, port).read_text().strip()))
        except OSError:
            pass
    candidates.append(settings.admin_token_path)
    for path in candidates:
        try:
            token = path.read_text().strip()
        except OSError:
            continue
        if token:
            return token
    raise AdminTokenError("no admin token: set HUB_ADMIN_TOKEN, or start the hub on this machine with "
                          "'ocpi-hub serve' (it keeps a generated token where the CLI finds it)")
