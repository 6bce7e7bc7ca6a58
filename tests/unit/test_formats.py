"""The formats the contract and the services share are one definition."""

import pytest
from marshmallow import ValidationError, validate

from events import schemas
from events.formats import REGIE_CODE, published
from services.common.web import validators
from services.payment import domain
from services.payment.gateway import FakeGateway, GatewayError, PaymentOrder


def accepts(validator: validate.Validator, value: str) -> bool:
    try:
        validator(value)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("value", ["SPORTS", "a_b-1", "x" * 32, "x" * 33, "", "é", "A B"])
def test_the_apis_and_the_contract_take_the_same_regie_codes(value: str) -> None:
    assert accepts(validators.CODE, value) == accepts(schemas.CODE, value)


@pytest.mark.parametrize("value", ["000001", "12345", "1234567", "12345a", " 123456"])
def test_the_apis_and_the_contract_take_the_same_numcli(value: str) -> None:
    assert accepts(validators.NUMCLI, value) == accepts(schemas.NUMCLI, value)


def test_the_services_refuse_a_trailing_newline_the_published_pattern_allows() -> None:
    assert not accepts(validators.CODE, "SPORTS\n")
    assert not accepts(validators.NUMCLI, "000001\n")
    # Published as JSON Schema, where $ is the end of the text: unchanged for subscribers.
    assert published(REGIE_CODE) == r"^[A-Za-z0-9_-]{1,32}$"


def order(amount_cents: int) -> PaymentOrder:
    return PaymentOrder(numcli="000001", saisie="T", exer="2025", refdet="SPORTS25030111",
                        amount_cents=amount_cents, email="parent@example.org", objet="F",
                        urlnotif="http://pay.test/n", urlredirect="http://pay.test/r")


@pytest.mark.parametrize(
    ("amount_cents", "fault"),
    [(domain.MIN_PAYMENT_CENTS - 1, "M3"), (domain.MIN_PAYMENT_CENTS, None),
     (domain.MAX_PAYMENT_CENTS - 1, None), (domain.MAX_PAYMENT_CENTS, "M5")],
)
def test_the_fake_payfip_and_the_payment_rules_share_the_amount_limits(
    amount_cents: int, fault: str | None
) -> None:
    try:
        FakeGateway().create(order(amount_cents))
        got = None
    except GatewayError as e:
        got = e.code
    assert got == fault
