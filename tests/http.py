"""Checks on the JSON an API answers a bad request with, shared by the bad-input tables."""

from typing import Any

from werkzeug.test import TestResponse


def J(*keys: str) -> tuple[str, ...]:
    """Where a field of the JSON body is reported in ``errors``."""
    return ("json", *keys)


def reasons(errors: Any, where: tuple[str, ...]) -> list[str]:
    """The list of reasons at ``where`` in an ``errors`` body, failing if it is not there."""
    node = errors
    for key in where:
        assert isinstance(node, dict) and key in node, f"no {key!r} in {node!r}"
        node = node[key]
    assert isinstance(node, list) and node, node
    assert all(isinstance(why, str) and why.strip() for why in node), node
    return node


def answered(response: TestResponse, status: int, where: tuple[str, ...] | None) -> Any:
    """The JSON body of ``response``, which must have ``status``; an error's body repeats
    its status as ``code`` and, unless ``where`` is None, names its reasons there."""
    assert response.status_code == status, response.get_data(as_text=True)[:1000]
    assert response.is_json
    answer = response.get_json()
    if status >= 400:
        assert answer["code"] == status
    if where is not None:
        reasons(answer["errors"], where)
    return answer
