"""The production rule: a régie in production (saisie W) is paid through PayFiP only."""

import pytest

from services.payment.guards import check_at_start, production_refusal

PAYFIP = "https://www.payfip.gouv.fr/tpa/services/securite"


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8003/tpa/services/securite",  # make run's simulator
    "http://payfip-sim:8003/tpa/services/securite",  # compose's
    "http://www.payfip.gouv.fr/tpa/services/securite",  # PayFiP, but in clear
    "https://127.0.0.1:8443/tpa/services/securite",
    "https://127.8.9.10/tpa/services/securite",
    "https://localhost/tpa/services/securite",
    "https://LOCALHOST./tpa/services/securite",
    "https://sim.localhost/tpa/services/securite",
    "https://[::1]:8443/tpa/services/securite",
    "https://[::ffff:127.0.0.1]/tpa/services/securite",
    "https://0.0.0.0/tpa/services/securite",
    "https:///tpa/services/securite",
    "",
])
def test_a_production_regie_is_refused_anything_but_payfip(url: str) -> None:
    reason = production_refusal("W", url)
    assert reason is not None
    assert "PAYFIP_SERVICE_URL" in reason


@pytest.mark.parametrize("saisie", ["T", "X", " T "])
def test_test_and_activation_regies_may_use_the_simulator(saisie: str) -> None:
    assert production_refusal(saisie, "http://127.0.0.1:8003/tpa/services/securite") is None


@pytest.mark.parametrize("url", [PAYFIP, "HTTPS://www.payfip.gouv.fr/tpa/services/securite",
                                 "https://203.0.113.7/tpa/services/securite"])
def test_a_production_regie_may_use_payfip(url: str) -> None:
    assert production_refusal("W", url) is None
    assert production_refusal(" W ", url) is None


def test_the_start_check_names_every_production_regie_refused() -> None:
    saisies = {"SPORTS": "W", "CANTINE": "T", "CRECHE": "W"}
    with pytest.raises(RuntimeError) as refused:
        check_at_start(saisies, "http://127.0.0.1:8003/tpa/services/securite")
    message = str(refused.value)
    assert "CRECHE" in message and "SPORTS" in message and "CANTINE" not in message
    check_at_start(saisies, PAYFIP)
    check_at_start({"CANTINE": "T"}, "http://127.0.0.1:8003/tpa/services/securite")
