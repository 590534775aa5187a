"""One module per `sml` command; each exposes ``register(subparsers)``.

Modules are imported only when their command runs, so `sml --help` stays fast and a command
never pulls in the dependencies of another.
"""
