"""Several consumer processes share a topic by a static assignment: REGIE_CONSUMER_INDEX of
REGIE_CONSUMER_COUNT reads the partitions p with p % count == index, and nothing else."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from services import bootstrap
from services.cli import main
from services.common.messaging.consumer import owned_partitions
from tests.conftest import make_settings
from tests.factories import open_regies, terms
from tests.helpers import consume_in_memory, relayed_in_memory


def test_each_partition_goes_to_one_consumer_by_its_index() -> None:
    assert owned_partitions(6, (0, 1)) == [0, 1, 2, 3, 4, 5]
    assert owned_partitions(6, (0, 2)) == [0, 2, 4]
    assert owned_partitions(6, (1, 2)) == [1, 3, 5]
    assert owned_partitions(6, (1, 4)) == [1, 5]
    assert owned_partitions(6, (7, 8)) == []
    shares = [owned_partitions(12, (i, 5)) for i in range(5)]
    assert sorted(p for share in shares for p in share) == list(range(12))


@pytest.mark.parametrize(("index", "count"), [("0", "1"), ("1", "2"), (" 2 ", "3")])
def test_a_valid_share(tmp_path: Path, index: str, count: str) -> None:
    settings = make_settings("memory", tmp_path, consumer_index=index, consumer_count=count)
    assert settings.consumer_share() == (int(index), int(count))


@pytest.mark.parametrize(("index", "count", "reason"), [
    ("2", "2", r"REGIE_CONSUMER_INDEX=2 must be from 0 to 1"),
    ("-1", "2", r"REGIE_CONSUMER_INDEX=-1 must be from 0 to 1"),
    ("0", "0", r"REGIE_CONSUMER_COUNT=0 must be at least 1"),
    ("one", "2", r"REGIE_CONSUMER_INDEX='one' is not a whole number"),
    ("0", "2.5", r"REGIE_CONSUMER_COUNT='2.5' is not a whole number"),
])
def test_a_bad_share_is_refused_with_its_reason(tmp_path: Path, index: str, count: str,
                                                reason: str) -> None:
    settings = make_settings("memory", tmp_path, consumer_index=index, consumer_count=count)
    with pytest.raises(ValueError, match=reason):
        settings.consumer_share()
    with pytest.raises(ValueError, match=reason):
        bootstrap.consumer("payment", settings)


def test_regie_consume_stops_on_a_bad_share_before_connecting_anything(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("REGIE_CONSUMER_INDEX", "3")
    monkeypatch.setenv("REGIE_CONSUMER_COUNT", "3")
    # Nothing listens there: a consumer that got as far as connecting would not say why.
    monkeypatch.setenv("PERSISTENCE_MODULE", "eventsourcing.postgres")
    monkeypatch.setenv("POSTGRES_PORT", "9")
    assert main(["consume", "payment"]) == 1
    assert "REGIE_CONSUMER_INDEX=3 must be from 0 to 2 (REGIE_CONSUMER_COUNT=3)" in \
        capsys.readouterr().err


def test_two_consumers_each_apply_only_their_partitions(tmp_path: Path) -> None:
    settings = make_settings("memory", tmp_path)
    billing, payment = bootstrap.billing_app(settings), bootstrap.payment_app(settings)
    open_regies(billing)
    families = {f"fam-{i}" for i in range(24)}
    for i in range(24):
        billing.issue_invoice(terms(f"F-{i}", family=f"fam-{i}"))
    publisher = relayed_in_memory(settings, billing)
    broker = publisher.broker
    # The key is the family: an invoice's messages (its subject's) are all in one partition.
    even = {m.key for p in (0, 2, 4) for m in publisher.records(p) if m.key in families}
    odd = families - even
    assert even and odd

    def visible() -> set[str]:
        return {f for f in families if payment.to_pay_summary(f)}

    consume_in_memory(
        make_settings("memory", tmp_path, consumer_index="0", consumer_count="2"),
        broker, payment, lambda: visible() >= even, linger=0.3)
    assert visible() == even
    consume_in_memory(
        make_settings("memory", tmp_path, consumer_index="1", consumer_count="2"),
        broker, payment, lambda: visible() == even | odd)
    assert visible() == even | odd


def test_a_parked_message_holds_back_its_subject_in_the_consumer_that_owns_it(
        tmp_path: Path) -> None:
    """The dead-letter rule with two consumers: a subject lives in one partition, so the
    consumer of that partition parks its unreadable message and every later one of it."""
    settings = make_settings("memory", tmp_path)
    billing, payment = bootstrap.billing_app(settings), bootstrap.payment_app(settings)
    open_regies(billing)
    families = {f"fam-{i}" for i in range(12)}
    for i in range(12):
        billing.issue_invoice(terms(f"F-{i}", family=f"fam-{i}"))
    held = billing.issue_invoice(terms("F-held", family="fam-0")).invoice
    billing.cancel_invoice(held.id, "erreur de saisie")
    publisher = relayed_in_memory(settings, billing)
    broker = publisher.broker
    # F-held's issue, in a version no reader knows: parked, and its cancellation behind it.
    [(partition, offset)] = [(p, o) for p in range(6)
                             for o, m in enumerate(publisher.records(p))
                             if json.loads(m.value)["subject"] == str(held.id)
                             and json.loads(m.value)["type"].startswith("fr.regie.InvoiceIssued")]
    message = publisher.records(partition)[offset]
    body = json.loads(message.value)
    body["type"] = "fr.regie.InvoiceIssued.v99"
    log = broker.log("billing.invoices")
    assert log is not None
    log[partition][offset] = replace(message, value=json.dumps(body).encode())

    def visible() -> set[str]:
        return {f for f in families if payment.to_pay_summary(f)}

    owner = partition % 2
    consume_in_memory(
        make_settings("memory", tmp_path, consumer_index=str(owner), consumer_count="2"),
        broker, payment, lambda: len(payment.dead_letters.all()) >= 2, linger=0.2)
    assert len(payment.dead_letters.all()) == 2
    consume_in_memory(
        make_settings("memory", tmp_path, consumer_index=str(1 - owner), consumer_count="2"),
        broker, payment, lambda: visible() == families, linger=0.2)
    letters = payment.dead_letters.all()
    assert [(x.partition, x.subject) for x in letters] == [(partition, str(held.id))] * 2
    assert letters[0].offset == offset and letters[1].offset > offset
    assert visible() == families  # fam-0's other invoice went in; the held one did not
    assert [r["count"] for r in payment.to_pay_summary("fam-0")] == [1]


def test_a_consumer_with_a_share_does_not_take_it_for_a_changed_topic(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Its partitions are fewer than the topic's: that is no reason to read it again."""
    settings = make_settings("memory", tmp_path)
    billing, payment = bootstrap.billing_app(settings), bootstrap.payment_app(settings)
    open_regies(billing)
    billing.issue_invoice(terms("F-1", family="fam-1"))
    broker = relayed_in_memory(settings, billing).broker
    # Past the 5 s between two checks of the topic's partition count.
    consume_in_memory(
        make_settings("memory", tmp_path, consumer_index="0", consumer_count="2"),
        broker, payment, lambda: True, linger=6.0)
    assert "reading the topic again" not in caplog.text
