"""Pure wire codec: CBOR subset, framing, messages, handshake and sealed channel (no I/O)."""
