"""Everything a builder plugin may import: the builder protocol, the process runner, push helpers."""
