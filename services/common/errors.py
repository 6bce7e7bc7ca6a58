"""Refusals shared by both domains. Pure Python: the web layer maps them to 4xx."""


class DomainError(Exception):
    """A rule of the trade refused the command; ``field`` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class Conflict(DomainError):
    """The command contradicts what is already recorded."""


class NotFound(DomainError):
    pass


class OutOfOrder(Exception):
    """A consumed event does not follow the last one applied for its aggregate.

    Something between the producer's log and us lost events (a broker that lost a topic
    while we read it): the consumer must read the topic again from the start.
    """


class Unavailable(Exception):
    """A service we depend on (PayFiP) refused or did not answer; nothing was left half-done."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
