"""The whole system with the families' portal, and what the portal's browser tests share.

Every part is its own process (``tests.e2e.system.System``, the portal among them);
the browser is Debian's Chromium driven by Playwright; axe-core checks each page.
"""

import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from playwright.sync_api import Page

from services import demo
from tests.e2e.system import ISSUER, PAYER, READER, SIM_PARTS, SimSystem, running, sim_system

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "portal"
AXE_VERSION = "4.14.1"
AXE_DIR = ROOT / "test-artifacts" / "node"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]

PARTS = (*SIM_PARTS, "portal")


class PortalSystem(SimSystem):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.portal = f"http://127.0.0.1:{self.env['PORTAL_PORT']}"
        self.links: dict[str, str] = {}  # e-mail -> the one-time link the operator got

    def portal_cli(self, *args: str) -> str:
        """``python -m services.portal …`` as an operator runs it; what it printed."""
        done = subprocess.run([sys.executable, "-m", "services.portal", *args], env=self.env,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def account(self, family: str, email: str, password: str | None = None) -> str:
        """Create an account; set its password, or return its one-time link."""
        out = self.portal_cli("accounts", "create", "--family", family, "--email", email)
        match = re.search(r"(http\S+/compte/activer/\S+)", out)
        assert match, out
        self.links[email] = match.group(1)
        if password is not None:
            self.portal_cli("accounts", "set-password", "--email", email, "--password", password)
        return match.group(1)

    def reader(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, f"{self.payment}{path}", timeout=30,
                                headers={"Authorization": f"Bearer {READER}"}, **kwargs)

    def payer(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """The payment API as the portal calls it, with its payer token."""
        return requests.request(method, f"{self.payment}{path}", timeout=30,
                                headers={"Authorization": f"Bearer {PAYER}"}, **kwargs)


@dataclass
class Family:
    id: str
    email: str
    password: str
    invoices: dict[str, str] = field(default_factory=dict)  # number -> id


@contextmanager
def portal_system(tmp: Path, kafka: Any) -> Iterator[PortalSystem]:
    s = sim_system(PortalSystem, tmp, kafka, "PORTAL_PORT")
    s.env.update(
        # The payment API, back from PayFiP, sends the browser on to the portal's page.
        PORTAL_RETURN_URL=f"{s.portal}/paiement/retour",
        PORTAL_PAYMENT_URL=s.payment,
        PORTAL_PAYMENT_TOKEN=PAYER,
        PORTAL_ACCOUNTS_DB=str(s.settings.var_dir / "portal.db"),
        PORTAL_PUBLIC_URL=s.portal,
        PORTAL_SECRET_KEY=uuid.uuid4().hex,
    )
    with running(s, PARTS, s.sim, s.portal):
        yield s


def load_demo(s: PortalSystem) -> None:
    demo.load(s.billing, ISSUER)


# --- the browser side -------------------------------------------------------------------


def axe_source() -> str:
    """axe-core's axe.min.js, installed with npm into an ignored folder on first use."""
    js = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"
    if not js.exists():
        AXE_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--prefix", str(AXE_DIR), "--no-audit", "--no-fund",
                        "--no-save", "--loglevel=error", f"axe-core@{AXE_VERSION}"],
                       check=True, timeout=300)
    return js.read_text()


AXE_RUN = """async () => {
  const result = await axe.run(document, {resultTypes: ["violations"]});
  return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 5).map(n => n.target.join(" "))}));
}"""


def check_a11y(page: Page) -> None:
    """No serious or critical axe-core violation on the page as it is now."""
    violations = page.evaluate(AXE_RUN)
    bad = [v for v in violations if v["impact"] in ("serious", "critical")]
    assert not bad, f"{page.url}: {bad}"


def no_horizontal_scroll(page: Page) -> None:
    width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"{page.url} is wider than the screen: {width}"


class Steps:
    """Screenshots of one flow's steps, numbered, under test-artifacts/portal/."""

    def __init__(self, flow: str) -> None:
        self.flow = flow
        self.n = 0
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for old in ARTIFACTS.glob(f"{flow}-*.png"):
            old.unlink()

    def shot(self, page: Page, name: str, a11y: bool = True) -> Path:
        """Screenshot the page; check it with axe unless it is not ours (PayFiP)."""
        self.n += 1
        path = ARTIFACTS / f"{self.flow}-{self.n:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        if a11y:
            check_a11y(page)
        return path


def tab_to(page: Page, text: str, limit: int = 60) -> None:
    """Move the focus with the Tab key alone until it reaches the control named ``text``."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        name = page.evaluate(
            "() => { const e = document.activeElement;"
            " return e ? (e.innerText || e.value || e.getAttribute('aria-label') || '') : ''; }")
        if str(name).strip().lower() == text.lower():
            return
    raise AssertionError(f"{text!r} cannot be reached with the Tab key on {page.url}")
