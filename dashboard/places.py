"""Where the dashboard's files are, whether it runs from a clone or from its installed wheel.

A clone has templates/ and static/ at its top; the wheel carries them inside this package
(pyproject.toml maps them there), since an installed distribution must not put directories with
such names at the top of site-packages.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
BASE_DIR = PACKAGE_DIR.parent
INSTALLED = (PACKAGE_DIR / "templates").is_dir()
FILES_DIR = PACKAGE_DIR if INSTALLED else BASE_DIR


def var_dir() -> Path:
    """Where the dashboard keeps what it makes on this machine (its secret key, the collected static
    files, the demo's database): DASHBOARD_VAR_DIR; from a clone, its var/; installed, the user's
    state directory (XDG_STATE_HOME, by default ~/.local/state) under pgmq-dashboard/."""
    if os.environ.get("DASHBOARD_VAR_DIR"):
        return Path(os.environ["DASHBOARD_VAR_DIR"]).resolve()
    if not INSTALLED:
        return BASE_DIR / "var"
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state").resolve() / "pgmq-dashboard"


def static_root() -> Path:
    """Where collectstatic puts the files whitenoise serves: DASHBOARD_STATIC_ROOT; from a clone its
    staticfiles/; installed, one directory per version in var_dir(), so an upgrade collects anew."""
    if os.environ.get("DASHBOARD_STATIC_ROOT"):
        return Path(os.environ["DASHBOARD_STATIC_ROOT"]).resolve()
    if not INSTALLED:
        return BASE_DIR / "staticfiles"
    from dashboard import __version__

    return var_dir() / f"staticfiles-{__version__}"
