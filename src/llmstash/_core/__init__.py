"""The pure core: key derivation, cache-control policy and the entry envelope. No I/O here."""
