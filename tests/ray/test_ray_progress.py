"""What a Ray run shows while it works: cells/s on the provider's bar and a line per worker
with its activity; LoRA paths with [brackets] are shown as text, not read as markup."""

from __future__ import annotations

import time

from lorascope.harness.progress import Progress


def test_worker_lines_show_activity_and_cells_per_second(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    with Progress({"diffusers": 4}, True) as bar:
        bar.add_worker("diffusers/w0", "w0 node-a pid 7")
        bar.add_worker("diffusers/w1", "w1 node-b pid 8")
        bar.worker("diffusers/w0", activity="/loras/[v2]style@0.5 x2")
        for _ in range(2):
            time.sleep(0.05)
            bar.advance("diffusers", 1)
            bar.worker("diffusers/w1", cells=1)
        bar.worker("diffusers/w1", activity="lost")
    err = capsys.readouterr().err
    assert "w0 node-a pid 7" in err and "/loras/[v2]style@0.5 x2" in err
    assert "lost" in err
    assert "cells/s" in err and "2/4" in err
