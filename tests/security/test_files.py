"""Files the observer writes are readable by their owner only (0600), whatever the umask
lets through and whatever was at the path before."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from observer.chaos.journal import save_json


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_a_chaos_journal_is_written_0600_even_over_a_world_readable_one(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        out = tmp_path / "journal.json"
        save_json({"status": "completed", "notes": ["a"]}, out)
        assert _mode(out) == 0o600
        out.chmod(0o644)  # an earlier journal, readable by all
        save_json({"status": "completed", "notes": ["b"]}, out)
        assert _mode(out) == 0o600 and json.loads(out.read_text())["notes"] == ["b"]
        assert not (tmp_path / "journal.json.tmp").exists()
    finally:
        os.umask(old)
