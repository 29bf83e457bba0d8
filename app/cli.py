"""The console script's import path (pyproject.toml ``facereel = "app.cli:main"``): app/entry/cli.py."""

from app.entry.cli import main

__all__ = ["main"]
