"""The HTTP layer: thin falcon resources, one error mapping, wire serialisation."""
