"""The engine's decisions: pure functions over typed data, no I/O (see tests/unit/test_engine_*.py).

Nothing in this package may import sockets, files, clocks or a store backend; time comes in as `now`
and randomness as an argument.
"""
