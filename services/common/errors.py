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
