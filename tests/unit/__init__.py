"""Plain unit tests of pure functions."""
