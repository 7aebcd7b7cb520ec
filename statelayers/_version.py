"""The package version, in one place: ``pyproject.toml`` reads it (``[tool.setuptools.dynamic]``), and so does
``statelayers.__version__``."""

__version__ = "0.1.0"
