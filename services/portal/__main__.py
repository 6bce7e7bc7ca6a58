"""``python -m services.portal``: operators' account commands, and the portal for development.

    python -m services.portal accounts create --family famille-martin --email a@example.org
    python -m services.portal accounts link --email a@example.org        # a new one-time link
    python -m services.portal accounts set-password --email a@example.org --password …
    python -m services.portal serve [--port 8000]

gunicorn runs the portal in production: ``gunicorn 'services.portal.web:create_app()'``.
The commands are the back office's too (services.common.web.site_commands).
"""

import argparse
import sys

from services.common.web.site_commands import SiteCommands
from services.portal.accounts import AccountError, Accounts, SqliteAccounts
from services.portal.settings import PortalSettings


class PortalCommands(SiteCommands):
    prog = "python -m services.portal"
    description = "Régie families' portal"
    accounts_help = "families' accounts"
    site = "the portal"
    link_path = "/compte/activer/"
    refused = AccountError
    settings = PortalSettings
    web = "services.portal.web"

    def create_options(self, create: argparse.ArgumentParser) -> None:
        create.add_argument("--family", required=True,
                            help="the family id invoices are issued to")
        create.add_argument("--email", required=True)

    def accounts(self, settings: PortalSettings) -> Accounts:
        return Accounts(SqliteAccounts(settings.accounts_db))

    def create(self, accounts: Accounts, args: argparse.Namespace) -> tuple[str, str]:
        return (accounts.create(args.family, args.email),
                f"Account {args.email} created for family {args.family}.")


def main(argv: list[str] | None = None) -> int:
    return PortalCommands().main(argv)


if __name__ == "__main__":
    sys.exit(main())
