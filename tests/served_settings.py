"""The dashboard's own settings, as the tests' gunicorn serves them, with the tests' password hashing.

A test user's password is hashed with 1,000 PBKDF2 iterations (tests/conftest.py). Under the
production settings each sign-in to a test's gunicorn then cost 0.55 s of CPU: the first made the
hash 1,000,000 iterations strong, every later one checked it at that strength. Over the suite's
sign-ins that was more than a minute of CPU on two cores. Django's strengthening of a weak hash is
tested in tests/test_account_audit.py, and the production hashing wherever a test starts the
dashboard by its own command (tests/test_package.py, test_make_run.py).
"""

from dashboard.settings import *  # noqa: F403

PASSWORD_HASHERS = ["tests.hashing.QuickPBKDF2PasswordHasher"]
