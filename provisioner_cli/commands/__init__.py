"""The commands, one module per kind: instances, the listing, the figures."""
