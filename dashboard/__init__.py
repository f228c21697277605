# The one place the version is written: the package's metadata (pyproject.toml), `pgmq-dashboard
# --version`, the page footer and /healthz read it from here. CHANGELOG.md says what each one changed.
__version__ = "0.1.0"
