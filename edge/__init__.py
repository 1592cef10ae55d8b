"""edge: the gateway daemon: ingest signed readings, verify, store durably, chain, sync to the root."""
