"""Verification codes: short enough to type, tied to the attested event and to the chain.

A code is the document's kind, the position of the event it attests in the payment history,
and a MAC over both and that position's chain hash. Checking a code recomputes the MAC from
the chain as stored: a code made up, or one whose event or chain was altered since, fails.
The MAC is keyed with the chain's key (``REGIE_CHAIN_KEY``) when there is one, so that no
one without it can make a code even knowing the chain's hashes.
"""

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

KINDS = {"F": "invoice", "A": "certificate", "R": "receipt", "J": "journal"}
LETTERS = {kind: letter for letter, kind in KINDS.items()}
# Without a chain key the MAC is still keyed, only publicly: it then proves the chain
# position, not who made the code.
PUBLIC_KEY = b"regie-documents"
# Typed with or without dashes or spaces, in either case.
PATTERN = re.compile(r"^([FARJ])(\d{1,15})([A-Z2-7]{8})$")


@dataclass(frozen=True)
class Code:
    kind: str  # invoice, certificate, receipt, journal
    position: int
    mac: str

    def __str__(self) -> str:
        return f"{LETTERS[self.kind]}{self.position}-{self.mac[:4]}-{self.mac[4:]}"


def mac(kind: str, position: int, chain_hash: str, key: bytes = b"") -> str:
    digest = hmac.new(key or PUBLIC_KEY, f"{kind}|{position}|{chain_hash}".encode(),
                      hashlib.sha256).digest()
    return base64.b32encode(digest).decode()[:8]


def make(kind: str, position: int, chain_hash: str, key: bytes = b"") -> Code:
    return Code(kind, position, mac(kind, position, chain_hash, key))


def parse(text: str) -> Code | None:
    """The code typed, or None if it cannot be one."""
    found = PATTERN.match(re.sub(r"[\s-]", "", text.upper()))
    if found is None:
        return None
    return Code(KINDS[found[1]], int(found[2]), found[3])


def matches(code: Code, chain_hash: str, key: bytes = b"") -> bool:
    return hmac.compare_digest(code.mac, mac(code.kind, code.position, chain_hash, key))
