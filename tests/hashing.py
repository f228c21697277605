from django.contrib.auth.hashers import PBKDF2PasswordHasher


class QuickPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """Django's PBKDF2 with 1,000 iterations instead of 1,000,000 (0.55 s a password here, paid by
    every test that makes a user or signs in). Same algorithm and format."""

    iterations = 1_000
