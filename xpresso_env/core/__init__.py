"""The core: records, wire shapes and grammars, renderers, codec, validation. No I/O here."""
