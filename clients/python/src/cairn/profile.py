"""Where a client finds the cluster, the way the ``cairn`` command line does
(node/src/cli/profile.rs): endpoints given by the caller, else ``CAIRN_ENDPOINTS``, else the
client profile (``CAIRN_PROFILE``, else ``./cairn-data/client-profile.toml`` if it exists,
which ``cairn dev`` writes), else :data:`DEFAULT_ENDPOINT`.

The profile is TOML; unknown keys are ignored, so this client reads a newer profile::

    endpoints = ["https://127.0.0.1:2113", "https://127.0.0.1:2114", "https://127.0.0.1:2115"]
    tls_ca = "/home/me/cairn-data/ca.pem"

``tls_ca`` names the CA that signed the nodes' certificates (relative: from the profile's
directory); ``tls_ca=`` or ``CAIRN_TLS_CA`` override it (:func:`resolve_tls_ca`).
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
TLS_CA_ENV = "CAIRN_TLS_CA"
TOKEN_ENV = "CAIRN_TOKEN"
#: Largest CA file read: a PEM bundle of a few certificates.
MAX_CA_FILE_BYTES = 1024 * 1024


def read_profile(path: Union[str, Path]) -> list[str]:
    """The endpoints of a client profile; :class:`InvalidInput` naming the file if it is
    missing, too big, not TOML, or lists no endpoint."""
    return _read_profile(path)[0]


def _read_profile(path: Union[str, Path]) -> tuple[list[str], Optional[Path]]:
    """The endpoints and the CA file of a client profile."""
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
    ca = profile.get("tls_ca")
    if ca is not None and not isinstance(ca, str):
        raise InvalidInput(f"profile {path}: `tls_ca` must be a file name")
    return urls, (path.parent / ca if ca else None)


def _profile_in_use(
    endpoints: Optional[Sequence[str]], profile: Optional[Union[str, Path]], env: Mapping[str, str]
) -> Optional[Union[str, Path]]:
    """The profile the endpoints come from, if they come from one."""
    if endpoints is not None or env.get(ENDPOINTS_ENV, "").strip():
        return None
    named = profile if profile is not None else env.get(PROFILE_ENV) or None
    if named:
        return named
    if Path(DEFAULT_PROFILE_PATH).exists():
        return DEFAULT_PROFILE_PATH
    return None


def resolve_token(
    token: Optional[str] = None,
    endpoints: Optional[Sequence[str]] = None,
    profile: Optional[Union[str, Path]] = None,
    environ: Optional[Mapping[str, str]] = None,
) -> Optional[str]:
    """The API token every call carries: ``token``, else ``CAIRN_TOKEN``, else the ``token``
    of the profile the endpoints come from (``cairn dev`` writes its admin token there);
    ``None`` for a cluster run ``--insecure``. Sent only over TLS."""
    env = os.environ if environ is None else environ
    if token:
        return token
    if env.get(TOKEN_ENV, "").strip():
        return env[TOKEN_ENV].strip()
    in_use = _profile_in_use(endpoints, profile, env)
    if in_use is None:
        return None
    path = Path(in_use)
    try:
        found = tomllib.loads(path.read_text()).get("token")
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise InvalidInput(f"profile {path}: {err}") from err
    if found is not None and not isinstance(found, str):
        raise InvalidInput(f"profile {path}: `token` must be a string")
    return found or None


def read_ca(path: Union[str, Path]) -> bytes:
    """The PEM of a CA file; :class:`InvalidInput` naming the file when it cannot be one."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_CA_FILE_BYTES:
            raise InvalidInput(f"TLS CA {path}: {size} bytes, at most {MAX_CA_FILE_BYTES}")
        pem = path.read_bytes()
    except OSError as err:
        raise InvalidInput(f"TLS CA {path}: {err.strerror or err}") from err
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise InvalidInput(f"TLS CA {path}: holds no PEM certificate")
    return pem


def resolve_tls_ca(
    tls_ca: Optional[Union[str, Path, bytes]] = None,
    endpoints: Optional[Sequence[str]] = None,
    profile: Optional[Union[str, Path]] = None,
    environ: Optional[Mapping[str, str]] = None,
) -> Optional[bytes]:
    """The PEM of the CA to trust for ``https://`` endpoints: ``tls_ca`` (PEM bytes or a file),
    else ``CAIRN_TLS_CA``, else the ``tls_ca`` of the profile the endpoints come from; ``None``
    (the system's roots) when none is given."""
    env = os.environ if environ is None else environ
    if isinstance(tls_ca, bytes):
        if b"-----BEGIN CERTIFICATE-----" not in tls_ca:
            raise InvalidInput("tls_ca: holds no PEM certificate")
        return tls_ca
    if tls_ca is None and env.get(TLS_CA_ENV, "").strip():
        tls_ca = env[TLS_CA_ENV].strip()
    if tls_ca is None:
        in_use = _profile_in_use(endpoints, profile, env)
        tls_ca = _read_profile(in_use)[1] if in_use is not None else None
    return read_ca(tls_ca) if tls_ca is not None else None


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
