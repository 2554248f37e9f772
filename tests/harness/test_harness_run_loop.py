"""The run loop's client and imports, seen from outside: what reaches the server and what a
`lorascope run` process loads (benchmarks/RESULTS-transports.md has the speed figures)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from tests.fakes import TEST_KEY, AimlapiFake

ROOT = Path(__file__).resolve().parents[2]

#: `lorascope run ...` in a fresh interpreter that then says which heavy modules it imported.
RUN_AND_REPORT = (
    "import json, sys\n"
    "from lorascope.cli import main\n"
    "sys.argv = ['lorascope', 'run', *sys.argv[1:]]\n"
    "try:\n"
    "    main()\n"
    "except SystemExit as exc:\n"
    "    code = exc.code\n"
    "print(json.dumps({'exit': code, 'imported': sorted(m for m in ('pandas', 'pyarrow') if m in sys.modules)}))\n"
)


def run_process(suite: Path, out: Path, fake: AimlapiFake, cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LORASCOPE_", "AIMLAPI_"))}
    env.update({"AIMLAPI_KEY": TEST_KEY, "LORASCOPE_AIMLAPI_URL": fake.url, "LORASCOPE_CACHE": str(cache)})
    done = subprocess.run([sys.executable, "-c", RUN_AND_REPORT, str(suite), "--out", str(out), "--no-progress"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_run_writes_results_and_a_rerun_that_changes_nothing_imports_no_pandas(tmp_path):
    """pyarrow is needed only to rewrite results.parquet, and pandas not at all: a run that
    sends imports pyarrow (in the background, while it waits on the provider) and writes the
    file, which pandas reads back; a re-run of the finished run sends nothing and imports
    neither."""
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: loop\nproviders:\n  - aimlapi: {concurrency: 4}\nprompts:\n  - {id: cat, text: a cat}\n"
                     "  - {id: dog, text: a dog}\nseeds: [1, 2, 3]\nsize: 512x512\nsteps: 8\n")
    out = tmp_path / "run"
    with AimlapiFake(key=TEST_KEY) as fake:
        first = run_process(suite, out, fake, tmp_path / "cache")
        generated = fake.hits("generate")
        downloads = fake.hits("image")
        again = run_process(suite, out, fake, tmp_path / "cache")
        assert len(fake.hits("generate")) == len(generated)  # nothing sent again
    assert first == {"exit": 0, "imported": ["pyarrow"]}
    assert again == {"exit": 0, "imported": []}
    frame = pd.read_parquet(out / "results.parquet")
    assert len(frame) == 6 and set(frame["status"]) == {"succeeded"}
    # the hosted providers' one client says what it is, and carries the key only to the API
    assert len(generated) == 6 and all(r.headers["user-agent"] == "lorascope/0.1 (+aiohttp)" for r in generated)
    assert all(r.headers["authorization"] == f"Bearer {TEST_KEY}" for r in generated)
    assert len(downloads) == 6 and all("authorization" not in r.headers for r in downloads)
