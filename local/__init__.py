"""The embedded AWS emulation used by `make run` and the tests (never deployed)."""
