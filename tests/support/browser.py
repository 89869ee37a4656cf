"""Debian's Chromium, as the browser tests drive it (no browser download)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CHROMIUM = os.environ.get("CAMPANA_TEST_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
CHROMIUM_INSTALLED = Path(CHROMIUM).exists()
# Without these, Chromium reaches for Google's services, which this network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
