"""How the portal says how an invoice was paid, whichever means the payment API names."""

import pytest

from services.payment.domain import COUNTER_MEANS, MEANS
from services.portal import formatting as fmt


@pytest.mark.parametrize("means", [*MEANS.values(), *COUNTER_MEANS, "credit"])
def test_every_means_of_payment_has_words(means: str) -> None:
    assert fmt.means(means), f"no words for {means!r}: the history would say 'payé par '"


def test_counter_means_read_as_a_family_says_them() -> None:
    assert fmt.means("cash") == "espèces"
    assert fmt.means("ancv") == "chèques-vacances ANCV"
