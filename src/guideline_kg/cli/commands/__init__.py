"""Subcommands of the command line; each module defines ``register(subparsers)``."""
