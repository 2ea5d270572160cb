"""Subcommands added by later features, kept out of cli.py so each lives beside its feature."""
from __future__ import annotations
