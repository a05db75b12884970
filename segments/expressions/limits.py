"""Limits that keep one expression from monopolising a server."""

#: Maximum height of an expression tree.
MAX_DEPTH = 64
#: Maximum number of segment references (counting repeats).
MAX_REFS = 256
#: Maximum length of an expression's text.
MAX_TEXT = 64 * 1024
