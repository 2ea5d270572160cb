"""xpresso-env: a self-hostable implementation of XPRESSO's Environment REST APIs."""

__version__ = "0.1.0"
