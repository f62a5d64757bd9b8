"""Subcommands beyond `data`: each registers its parser here (kept apart so cli.py stays small)."""

from __future__ import annotations

REGISTER: list = []
