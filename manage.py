#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    from django.core.management import execute_from_command_line
    from django.db import DatabaseError

    try:
        execute_from_command_line(sys.argv)
    except DatabaseError:
        # An unreachable database gets one line naming it, not a traceback from inside psycopg.
        from dashboard.databases import unreachable_databases

        problems = unreachable_databases()
        if not problems:
            raise
        sys.exit("error: " + "; ".join(problems))


if __name__ == "__main__":
    main()
