"""The operators' commands of both server-rendered sites (``python -m services.portal``,
``python -m services.backoffice``): an account made with its one-time link, a new link, a
password set directly, and the site on werkzeug for development."""

import argparse
import importlib
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Protocol


class SiteSettings(Protocol):
    @property
    def port(self) -> int: ...

    @property
    def public_url(self) -> str: ...


class SiteAccounts(Protocol):
    def new_link(self, email: str) -> str: ...

    def set_password(self, email: str, password: str) -> object: ...


class SiteCommands(ABC):
    """What a site's commands say and do differently, the rest alike: a site fills these in."""

    prog: str
    description: str
    accounts_help: str  # what its accounts are
    site: str  # what ``serve`` serves
    link_path: str  # where a one-time link leads, after the public URL
    refused: type[Exception]  # what its accounts raise for bad input
    settings: Callable[[], SiteSettings]  # its settings, read from the environment
    web: str  # the module whose create_app() makes the site, imported only to serve it

    @abstractmethod
    def create_options(self, create: argparse.ArgumentParser) -> None:
        """The options of ``accounts create`` (``--email`` among them)."""

    @abstractmethod
    def accounts(self, settings: Any) -> SiteAccounts:
        """The site's accounts, in the database its settings name."""

    @abstractmethod
    def create(self, accounts: Any, args: argparse.Namespace) -> tuple[str, str]:
        """Create the account ``args`` name: its one-time token, and what to tell of it."""

    def main(self, argv: list[str] | None = None) -> int:
        args = self.parser().parse_args(argv)
        settings = self.settings()
        if args.command == "serve":
            from werkzeug.serving import run_simple

            app = importlib.import_module(self.web).create_app()
            run_simple(args.host, args.port or settings.port, app, threaded=True)
            return 0
        service = self.accounts(settings)
        try:
            if args.action == "create":
                token, said = self.create(service, args)
                print(said)
            elif args.action == "link":
                token = service.new_link(args.email)
            else:
                service.set_password(args.email, args.password)
                print(f"Password set for {args.email}.")
                return 0
        except self.refused as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        link = f"{settings.public_url}{self.link_path}{token}"
        print(f"One-time link to set the password (valid 7 days): {link}")
        return 0

    def parser(self) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=self.prog, description=self.description)
        commands = parser.add_subparsers(dest="command", required=True)
        accounts = commands.add_parser("accounts", help=self.accounts_help)
        actions = accounts.add_subparsers(dest="action", required=True)
        self.create_options(actions.add_parser(
            "create", help="create an account; prints its one-time link"))
        relink = actions.add_parser("link", help="a new one-time link to (re)set the password")
        relink.add_argument("--email", required=True)
        setpw = actions.add_parser("set-password", help="set a password directly (demo, dev)")
        setpw.add_argument("--email", required=True)
        setpw.add_argument("--password", required=True)
        serve = commands.add_parser("serve", help=f"{self.site} on werkzeug, for development")
        serve.add_argument("--host", default="127.0.0.1")
        serve.add_argument("--port", type=int, default=None)
        return parser
