"""``ocpi-hub``: serve the hub, or talk to a running one as its operator."""

from __future__ import annotations

import argparse
import os
import sys

from hub import __version__
from hub.cli import add_admin_commands, run_admin


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ocpi-hub", description="OCPI roaming hub (2.1.1, 2.2.1 and 2.3.0): 'serve' runs it, the other commands "
                                     "manage a running hub through its admin API (HUB_URL, HUB_ADMIN_TOKEN)")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    srv = sub.add_parser("serve", help="start the hub", description="Start the hub. Settings come from HUB_* "
                         "environment variables (README.md, 'Configuration'); a bad one is reported on one line.")
    srv.add_argument("--workers", type=int, default=1, help="processes sharing the port (needs HUB_REDIS_URL)")
    srv.add_argument("--host", help="address to listen on (overrides HUB_HOST)")
    srv.add_argument("--port", type=int, help="port to listen on (overrides HUB_PORT; the advertised URL follows "
                                              "it unless HUB_PUBLIC_URL is set)")
    sub.add_parser("secret-key", help="print a new key for HUB_SECRET_KEYS (put it in front to rotate)")
    add_admin_commands(sub)
    args = parser.parse_args(argv)
    if args.command == "secret-key":
        from cryptography.fernet import Fernet

        print(Fernet.generate_key().decode())
        return 0
    if args.command == "serve":
        from hub.serve import serve

        return serve(workers=args.workers, host=args.host, port=args.port)
    try:
        code = run_admin(args)
        sys.stdout.flush()  # inside the try: a pipe closed early fails here, not in Python's flush at exit
        return code
    except BrokenPipeError:
        # The reader went away (`ocpi-hub audit | head`): stop quietly, no traceback, and no second error when
        # Python flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
