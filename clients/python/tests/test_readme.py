"""The README's first program runs as written, against a real cluster, and prints what the
README says it prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from harness import Cluster

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_example_runs_twice_as_described(cluster: Cluster, tmp_path: Path) -> None:
    program = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
    script = tmp_path / "example.py"
    script.write_text(program)
    env = {**os.environ, "CAIRN_ENDPOINTS": ",".join(cluster.endpoints)}
    env.pop("CAIRN_PROFILE", None)

    def run() -> list[str]:
        done = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, env=env,
            capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    first = run()
    assert first[0] == "written as revision 0"
    assert first[1] == "0 OrderPlaced {'total_cents': 1999}"
    assert re.fullmatch(r"leader: node [123] at http://127\.0\.0\.1:\d+", first[2])
    second = run()
    assert second[0] == "already placed: the stream is at revision 0"
    assert second[1:2] == first[1:2]
