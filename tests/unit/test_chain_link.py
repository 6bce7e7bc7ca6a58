"""The chain's link is fixed by the stores already written: its input must never change."""

import hashlib
import hmac
from uuid import UUID

import pytest

from services.common.storage.chain import GENESIS, link

ID = UUID("6f1c1d2e-8a53-4b0e-9d57-2f1b1a6c0e41")


def by_the_definition(key: bytes, *parts: str, state: bytes) -> str:
    message = b"".join(part.encode() + b"\x00" for part in parts) + state
    if key:
        return hmac.new(key, message, hashlib.sha256).hexdigest()
    return hashlib.sha256(message).hexdigest()


@pytest.mark.parametrize("key", [b"", b"the chain key"])
@pytest.mark.parametrize("originator_id", [ID, ID.hex])
def test_a_link_hashes_each_part_and_a_nul_then_the_state(
    key: bytes, originator_id: UUID | str
) -> None:
    state = '{"label":"Séjour"}'.encode()
    assert link(GENESIS, 12, originator_id, 3, "services.billing.domain:Invoice.Issued",
                state, key) == by_the_definition(
        key, GENESIS, "12", str(originator_id), "3", "services.billing.domain:Invoice.Issued",
        state=state)


def test_a_known_link_keeps_its_value() -> None:
    assert link(GENESIS, 1, ID, 1, "t", b"{}") == (
        "5a73303979dfb5e7106e93dd886a05d3e20bb92c0598036dc0d450ba81de53eb")
