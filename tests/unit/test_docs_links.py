"""The project's documents point only inside the repository."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

LINK = re.compile(r"\]\(([^)\s]+)\)")
# A file named in code quotes, e.g. `examples/subscriber/consumer.py`; HTTP paths such as
# `/openapi.json` or `/tpa/paiementws.web` are not files.
FILE_IN_CODE = re.compile(r"`([^`\s]*/[^`\s/]+\.(?:md|txt|rst|py|pdf|ya?ml|toml|sh))`")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_relative_links_reach_a_file_of_the_repository(document: Path) -> None:
    wrong = []
    for target in LINK.findall(document.read_text()):
        if target.startswith(("http://", "https://", "mailto:", "#")):
            continue
        path = (document.parent / target.split("#")[0]).resolve()
        if not path.is_relative_to(ROOT) or not path.exists():
            wrong.append(target)
    assert wrong == []


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_files_named_are_not_outside_the_repository(document: Path) -> None:
    outside = [name for name in FILE_IN_CODE.findall(document.read_text())
               if name.startswith(("/", "../", "~"))
               and not (name.startswith("/") and name.count("/") < 2)]
    assert outside == []
