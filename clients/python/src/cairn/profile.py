"""Where a client finds the cluster, the way the ``cairn`` command line does
(node/src/cli/profile.rs): endpoints given by the caller, else ``CAIRN_ENDPOINTS``, else the
client profile (``CAIRN_PROFILE``, else ``./cairn-data/client-profile.toml`` if it exists,
which ``cairn dev`` writes), else :data:`DEFAULT_ENDPOINT`.

The profile is TOML; unknown keys are ignored, so this client reads a newer profile::

    endpoints = ["http://127.0.0.1:2113", "http://127.0.0.1:2114", "http://127.0.0.1:2115"]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

from cairn.errors import InvalidInput

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: Where a default client connects: the first node of ``cairn dev``.
DEFAULT_ENDPOINT = "http://127.0.0.1:2113"
#: Where the profile is looked for when none is named: ``cairn dev``'s default data dir.
DEFAULT_PROFILE_PATH = "./cairn-data/client-profile.toml"
#: Largest profile read, in bytes: a profile is a few lines; anything bigger is not one.
MAX_PROFILE_BYTES = 64 * 1024
ENDPOINTS_ENV = "CAIRN_ENDPOINTS"
PROFILE_ENV = "CAIRN_PROFILE"


def read_profile(path: Union[str, Path]) -> list[str]:
    """The endpoints of a client profile; :class:`InvalidInput` naming the file if it is
    missing, too big, not TOML, or lists no endpoint."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_PROFILE_BYTES:
            raise InvalidInput(
                f"profile {path}: {size} bytes, at most {MAX_PROFILE_BYTES}: not a client profile"
            )
        profile = tomllib.loads(path.read_text())
    except OSError as err:
        raise InvalidInput(f"profile {path}: {err.strerror or err}") from err
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise InvalidInput(f"profile {path}: not a client profile: {err}") from err
    endpoints = profile.get("endpoints")
    if not isinstance(endpoints, list) or not all(isinstance(e, str) for e in endpoints):
        raise InvalidInput(f"profile {path}: `endpoints` must be a list of URLs")
    urls = [e.strip() for e in endpoints if e.strip()]
    if not urls:
        raise InvalidInput(f"profile {path}: `endpoints` is empty")
    return urls


def resolve_endpoints(
    endpoints: Optional[Sequence[str]] = None,
    profile: Optional[Union[str, Path]] = None,
    environ: Optional[Mapping[str, str]] = None,
) -> list[str]:
    """The endpoints a client uses: ``endpoints``, else ``CAIRN_ENDPOINTS`` (comma-separated),
    else the profile (``profile``, else ``CAIRN_PROFILE``, else ``./cairn-data/client-profile.toml``
    when it exists), else :data:`DEFAULT_ENDPOINT`. An empty list given explicitly, or a named
    profile that is missing, is :class:`InvalidInput`, not a silent fallback."""
    env = os.environ if environ is None else environ
    if endpoints is None and env.get(ENDPOINTS_ENV, "").strip():
        endpoints = env[ENDPOINTS_ENV].split(",")
    if endpoints is not None:
        if isinstance(endpoints, str):
            endpoints = endpoints.split(",")
        urls = [e.strip() for e in endpoints if e.strip()]
        if not urls:
            raise InvalidInput(
                "endpoints: empty; give node URLs like http://127.0.0.1:2113"
            )
        return urls
    named = profile if profile is not None else env.get(PROFILE_ENV) or None
    if named:
        return read_profile(named)
    if Path(DEFAULT_PROFILE_PATH).exists():
        return read_profile(DEFAULT_PROFILE_PATH)
    return [DEFAULT_ENDPOINT]
