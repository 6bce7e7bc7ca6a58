"""Reading the documents the tests render: their text (pdftotext) and their pages (pdftoppm)."""

import re
import subprocess
from pathlib import Path

CODE = re.compile(r"Code de vérification : ([FARJ]\d+-[A-Z2-7]{4}-[A-Z2-7]{4})")


def pdf_text(content: bytes, tmp_path: Path, name: str = "document") -> str:
    """The PDF's text, laid out as on the page (poppler-utils' pdftotext: make system-deps)."""
    assert content.startswith(b"%PDF-"), content[:40]
    path = tmp_path / f"{name}.pdf"
    path.write_bytes(content)
    done = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True,
                          check=True, text=True)
    return done.stdout


def to_png(content: bytes, tmp_path: Path, name: str) -> Path:
    """The first page as a PNG (pdftoppm), to look at the layout."""
    path = tmp_path / f"{name}.pdf"
    path.write_bytes(content)
    subprocess.run(["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", "-singlefile",
                    str(path), str(tmp_path / name)], check=True)
    return tmp_path / f"{name}.png"


def code_in(text: str) -> str:
    found = CODE.search(text)
    assert found, text
    return found[1]


def squeezed(text: str) -> str:
    """The text with its runs of spaces made one: table cells come out far apart."""
    return re.sub(r"[ \t]+", " ", text)
