"""resolver: the resolution-root node, its witness and the resolution client."""
