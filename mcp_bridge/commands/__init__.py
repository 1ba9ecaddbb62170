"""One module per CLI command group; each exposes `register(subparsers)`.

A command's handler takes the parsed arguments and returns the process exit code.
"""
