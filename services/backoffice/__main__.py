"""``python -m services.backoffice``: operators' commands for staff accounts, and the back
office for development.

    python -m services.backoffice accounts create --email c.durand@mairie.example --name "C. Durand"
    python -m services.backoffice accounts link --email c.durand@mairie.example
    python -m services.backoffice accounts set-password --email … --password …
    python -m services.backoffice serve [--port 8004]

gunicorn runs it in production: ``gunicorn 'services.backoffice.web:create_app()'``.
"""

import argparse
import sys

from services.backoffice.settings import BackofficeSettings
from services.backoffice.staff import StaffAccounts
from services.portal.accounts import AccountError, SqliteAccounts


def link(settings: BackofficeSettings, token: str) -> str:
    return f"{settings.public_url}/guichet/compte/activer/{token}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.backoffice",
                                     description="Régie back office (the régisseur's desk)")
    commands = parser.add_subparsers(dest="command", required=True)
    accounts = commands.add_parser("accounts", help="staff accounts (role cashier)")
    actions = accounts.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create an account; prints its one-time link")
    create.add_argument("--email", required=True, help="the staff id recorded in the events")
    create.add_argument("--name", required=True, help="shown on the pages")
    relink = actions.add_parser("link", help="a new one-time link to (re)set the password")
    relink.add_argument("--email", required=True)
    setpw = actions.add_parser("set-password", help="set a password directly (demo, dev)")
    setpw.add_argument("--email", required=True)
    setpw.add_argument("--password", required=True)
    serve = commands.add_parser("serve", help="the back office on werkzeug, for development")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)

    settings = BackofficeSettings()
    if args.command == "serve":
        from werkzeug.serving import run_simple

        from services.backoffice.web import create_app

        run_simple(args.host, args.port or settings.port, create_app(), threaded=True)
        return 0

    service = StaffAccounts(SqliteAccounts(settings.accounts_db))
    try:
        if args.action == "create":
            token = service.create_staff(args.name, args.email)
            print(f"Staff account {args.email} created for {args.name}.")
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
