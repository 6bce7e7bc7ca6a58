"""``python -m services.backoffice``: operators' commands for staff accounts, and the back
office for development.

    python -m services.backoffice accounts create --email c.durand@mairie.example --name "C. Durand"
    python -m services.backoffice accounts link --email c.durand@mairie.example
    python -m services.backoffice accounts set-password --email … --password …
    python -m services.backoffice serve [--port 8004]

gunicorn runs it in production: ``gunicorn 'services.backoffice.web:create_app()'``.
The commands are the portal's too (services.common.web.site_commands).
"""

import argparse
import sys

from services.backoffice.settings import BackofficeSettings
from services.backoffice.staff import StaffAccounts
from services.common.web.site_commands import SiteCommands
from services.portal.accounts import AccountError, SqliteAccounts


class BackofficeCommands(SiteCommands):
    prog = "python -m services.backoffice"
    description = "Régie back office (the régisseur's desk)"
    accounts_help = "staff accounts (role cashier)"
    site = "the back office"
    link_path = "/guichet/compte/activer/"
    refused = AccountError
    settings = BackofficeSettings
    web = "services.backoffice.web"

    def create_options(self, create: argparse.ArgumentParser) -> None:
        create.add_argument("--email", required=True, help="the staff id recorded in the events")
        create.add_argument("--name", required=True, help="shown on the pages")

    def accounts(self, settings: BackofficeSettings) -> StaffAccounts:
        return StaffAccounts(SqliteAccounts(settings.accounts_db))

    def create(self, accounts: StaffAccounts, args: argparse.Namespace) -> tuple[str, str]:
        return (accounts.create_staff(args.name, args.email),
                f"Staff account {args.email} created for {args.name}.")


def main(argv: list[str] | None = None) -> int:
    return BackofficeCommands().main(argv)


if __name__ == "__main__":
    sys.exit(main())
