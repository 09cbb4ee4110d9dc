"""Sans-IO protocol code: bytes in, events out; never awaits, never imports trio.

``tests/protocol/test_purity.py`` enforces that nothing under this package imports
trio, ``socket`` or ``ssl``.
"""
