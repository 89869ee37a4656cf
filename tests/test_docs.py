"""The README stays true to the settings the service reads."""

from __future__ import annotations

from pathlib import Path

from campana.settings import Settings

README = Path(__file__).parent.parent / "README.md"


def test_readme_documents_every_setting_and_no_other() -> None:
    text = README.read_text()
    documented = {
        line.split("`")[1] for line in text.splitlines() if line.startswith("| `CAMPANA_")
    }
    assert documented == {f"CAMPANA_{name.upper()}" for name in Settings.model_fields}
