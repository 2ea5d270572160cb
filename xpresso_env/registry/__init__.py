"""Harnesses and engines: the registry service."""
