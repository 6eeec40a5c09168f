"""The packaging tests drive the same headless Chromium as tests/browser/."""

from __future__ import annotations

from tests.browser.conftest import browser

__all__ = ["browser"]
