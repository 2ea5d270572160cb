"""The core: records, storage documents and their index rules, wire shapes and grammars, the
renderer, codec, validation. No I/O here."""
