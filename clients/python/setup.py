"""Build hook: the gRPC stubs are generated from client/proto while the wheel is built.

Everything else about the package is in pyproject.toml.
"""

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stubgen  # noqa: E402  (lives beside this file)


class BuildPyWithStubs(build_py):
    """``build_py``, then the stubs into the build directory as the module ``cairn.v1``."""

    def run(self) -> None:
        super().run()
        stubgen.generate(Path(self.build_lib))


setup(cmdclass={"build_py": BuildPyWithStubs})
