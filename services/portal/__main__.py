"""``python -m services.portal``: operators' account commands, and the portal for development.

    python -m services.portal accounts create --family famille-martin --email a@example.org
    python -m services.portal accounts link --email a@example.org        # a new one-time link
    python -m services.portal accounts set-password --email a@example.org --password …
    python -m services.portal serve [--port 8000]

gunicorn runs the portal in production: ``gunicorn 'services.portal.web:create_app()'``.
"""

import argparse
import sys

from services.portal.accounts import AccountError, Accounts, SqliteAccounts
from services.portal.settings import PortalSettings


def link(settings: PortalSettings, token: str) -> str:
    return f"{settings.public_url}/compte/activer/{token}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.portal",
                                     description="Régie families' portal")
    commands = parser.add_subparsers(dest="command", required=True)
    accounts = commands.add_parser("accounts", help="families' accounts")
    actions = accounts.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create an account; prints its one-time link")
    create.add_argument("--family", required=True, help="the family id invoices are issued to")
    create.add_argument("--email", required=True)
    relink = actions.add_parser("link", help="a new one-time link to (re)set the password")
    relink.add_argument("--email", required=True)
    setpw = actions.add_parser("set-password", help="set a password directly (demo, dev)")
    setpw.add_argument("--email", required=True)
    setpw.add_argument("--password", required=True)
    serve = commands.add_parser("serve", help="the portal on werkzeug, for development")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)

    settings = PortalSettings()
    if args.command == "serve":
        from werkzeug.serving import run_simple

        from services.portal.web import create_app

        run_simple(args.host, args.port or settings.port, create_app(), threaded=True)
        return 0

    service = Accounts(SqliteAccounts(settings.accounts_db))
    try:
        if args.action == "create":
            token = service.create(args.family, args.email)
            print(f"Account {args.email} created for family {args.family}.")
            print(f"One-time link to set the password (valid 7 days): {link(settings, token)}")
        elif args.action == "link":
            token = service.new_link(args.email)
            print(f"One-time link to set the password (valid 7 days): {link(settings, token)}")
        else:
            service.set_password(args.email, args.password)
            print(f"Password set for {args.email}.")
    except AccountError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
