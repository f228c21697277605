#!/usr/bin/env python
"""Django's command-line utility for administrative tasks (from a clone; installed: `pgmq-dashboard manage`)."""

import sys

from dashboard.cli import manage

if __name__ == "__main__":
    manage(sys.argv)
