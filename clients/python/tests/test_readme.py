"""The README's first program runs as written, against a real cluster, and prints what the
README says it prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

from harness import Cluster

README = Path(__file__).resolve().parents[1] / "README.md"
ROOT_README = Path(__file__).resolve().parents[3] / "README.md"


def runner(readme: Path, cluster: Cluster, tmp_path: Path) -> Callable[[], list[str]]:
    """Runs the first Python block of ``readme`` as a program against ``cluster``."""
    program = re.findall(r"```python\n(.*?)```", readme.read_text(), re.S)[0]
    script = tmp_path / f"example-{readme.parent.name}.py"
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

    return run


def test_the_readme_example_runs_twice_as_described(cluster: Cluster, tmp_path: Path) -> None:
    run = runner(README, cluster, tmp_path)
    first = run()
    assert first[0] == "written as revision 0"
    assert first[1] == "0 OrderPlaced {'total_cents': 1999}"
    assert re.fullmatch(r"leader: node [123] at http://127\.0\.0\.1:\d+", first[2])
    second = run()
    assert second[0] == "already placed: the stream is at revision 0"
    assert second[1:2] == first[1:2]


def test_the_root_readme_example_appends_and_reads(cluster: Cluster, tmp_path: Path) -> None:
    run = runner(ROOT_README, cluster, tmp_path)
    assert run() == ["0 OrderPlaced {'total_cents': 1999}"]
    assert run()[-1] == "1 OrderPlaced {'total_cents': 1999}"


def test_the_eventsourcing_example_runs_on_cairn(cluster: Cluster, tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    (program,) = [block for block in blocks if "DogSchool" in block]
    script = tmp_path / "dog_school.py"
    script.write_text(program)
    env = {
        **os.environ,
        "PERSISTENCE_MODULE": "cairn.eventsourcing",
        "CAIRN_ENDPOINTS": ",".join(cluster.endpoints),
    }
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "{'name': 'Fido', 'tricks': ('roll over', 'play dead')}",
        "['Registered', 'TrickAdded', 'TrickAdded']",
    ]
