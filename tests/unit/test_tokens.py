"""Where each part's tokens come from, and which part gets which."""

from pathlib import Path

import pytest

from services.bootstrap import dev_tokens_file, ensure_dev_tokens, load_tokens
from services.common.web.auth import ROLES, TokenError, parse_tokens
from services.run import StartError, part_tokens
from tests.conftest import make_settings


def test_the_portal_and_counter_roles_are_known() -> None:
    assert parse_tokens("p:payer,c:cashier") == {"p": "payer", "c": "cashier"}
    with pytest.raises(TokenError, match="PAYMENT_TOKENS: unknown role 'boss'"):
        parse_tokens("b:boss", "PAYMENT_TOKENS")


def test_each_api_reads_its_own_tokens_and_else_regie_tokens(tmp_path: Path) -> None:
    settings = make_settings("memory", tmp_path, tokens="shared:reader",
                             billing_tokens="bill:issuer", payment_tokens="")
    assert load_tokens("billing", settings) == {"bill": "issuer"}
    assert load_tokens("payment", settings) == {"shared": "reader"}
    wrong = make_settings("memory", tmp_path, payment_tokens="pay:boss")
    with pytest.raises(TokenError, match=r"^PAYMENT_TOKENS: "):
        load_tokens("payment", wrong)


def test_development_tokens_gain_the_roles_they_lack(tmp_path: Path) -> None:
    settings = make_settings("memory", tmp_path)
    path = dev_tokens_file(settings)
    path.parent.mkdir(parents=True)
    # A file written before the payer role existed: its tokens stay what was printed.
    path.write_text("old-i:issuer,old-r:reader,old-a:auditor,old-o:operator\n")
    tokens = ensure_dev_tokens(settings)
    assert {t: r for t, r in tokens.items() if t.startswith("old-")} == {
        "old-i": "issuer", "old-r": "reader", "old-a": "auditor", "old-o": "operator"}
    assert sorted(tokens.values()) == sorted(ROLES)
    assert ensure_dev_tokens(settings) == tokens == load_tokens("payment", settings)
    assert path.stat().st_mode & 0o777 == 0o600


def test_make_run_gives_the_portal_a_payer_token_and_nothing_else() -> None:
    tokens = {"i": "issuer", "r": "reader", "p": "payer", "o": "operator", "c": "cashier"}
    parts = part_tokens(tokens, {"PAYMENT_TOKENS": "own:payer"})
    assert parts["portal"] == {"PORTAL_PAYMENT_TOKEN": "p"}
    assert parts["billing-api"] == {
        "REGIE_TOKENS": "i:issuer,r:reader,p:payer,o:operator,c:cashier"}
    assert parts["payment-api"]["PAYMENT_TOKENS"] == "own:payer"
    # The simulator, relays and consumers read no token: they are given none.
    assert set(parts) == {"portal", "backoffice", "billing-api", "payment-api"}
    with pytest.raises(StartError, match="payer"):
        part_tokens({"r": "reader"}, {})


def test_make_run_gives_the_back_office_a_cashier_token_and_nothing_else() -> None:
    parts = part_tokens({"p": "payer", "o": "operator", "c": "cashier"}, {})
    assert parts["backoffice"] == {"BACKOFFICE_TOKEN": "c"}
    given = part_tokens({"p": "payer"}, {"BACKOFFICE_TOKEN": "mine"})
    assert given["backoffice"] == {"BACKOFFICE_TOKEN": "mine"}
    with pytest.raises(StartError, match="cashier"):
        part_tokens({"p": "payer", "o": "operator"}, {})
