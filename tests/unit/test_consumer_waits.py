"""How the consumer waits between two polls, on a broker that answers at once and on one
that holds an empty fetch."""

from services.common.messaging.consumer import Waits


def test_on_a_broker_that_answers_at_once_the_pause_grows_while_idle_up_to_the_interval(
) -> None:
    waits = Waits(holds_fetches=False, longest=0.1, shortest=0.001)
    assert waits.poll_timeout() == 0.0  # waiting in the poll would fetch again and again
    assert waits.look_again == 0.001  # for the answer to the fetch an empty poll sent
    pauses = [waits.pause(got_records=False) for _ in range(10)]
    assert pauses[:4] == [0.001, 0.002, 0.004, 0.008]
    assert pauses[-1] == 0.1 and max(pauses) == 0.1


def test_records_make_the_next_polls_quick_again() -> None:
    waits = Waits(holds_fetches=False, longest=0.1, shortest=0.001)
    for _ in range(10):
        waits.pause(got_records=False)
    assert waits.pause(got_records=True) == 0.0  # the next poll at once
    assert waits.pause(got_records=False) == 0.001


def test_on_a_broker_that_holds_fetches_the_poll_itself_waits() -> None:
    waits = Waits(holds_fetches=True, longest=0.1)
    assert waits.poll_timeout() == 0.1
    assert waits.look_again == 0.0
    assert waits.pause(got_records=False) == 0.0
    assert waits.pause(got_records=True) == 0.0


def test_the_shortest_pause_never_exceeds_the_poll_interval() -> None:
    waits = Waits(holds_fetches=False, longest=0.0005)
    assert waits.pause(got_records=False) == 0.0005
