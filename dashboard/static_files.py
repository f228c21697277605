"""collectstatic, only when a source is newer than what was collected (`python -m
dashboard.static_files`, as `make run` and the developer tools do it).

Collecting again rewrites the manifest and the hashed CSS even when nothing changed, and a
dashboard already serving those files (the tests run several at once) would answer a request with
a file cut short meanwhile; when nothing changed, nothing is written.
"""

from __future__ import annotations

import json
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.contrib.staticfiles.finders import get_finders
from django.core.management import call_command


def collect_static() -> bool:
    """Collect the static files unless every one is in the manifest and older than it; whether it collected."""
    manifest = Path(settings.STATIC_ROOT) / "staticfiles.json"
    if manifest.exists():
        collected = json.loads(manifest.read_text()).get("paths", {})
        # What collectstatic itself leaves out (hidden files, such as fetch_static.py's marker) is
        # never in the manifest: counted, it would make every start collect again.
        ignored = apps.get_app_config("staticfiles").ignore_patterns
        sources = [(path, storage) for finder in get_finders() for path, storage in finder.list(ignored)]
        collected_at = manifest.stat().st_mtime
        if all(
            Path(storage.path(path)).stat().st_mtime <= collected_at
            and "/".join(filter(None, [getattr(storage, "prefix", None), path])) in collected
            for path, storage in sources
        ):
            return False
    call_command("collectstatic", "--noinput", verbosity=0)
    return True


if __name__ == "__main__":
    import django

    django.setup()
    collect_static()
