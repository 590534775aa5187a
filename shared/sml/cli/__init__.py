"""The ``sml`` command line: ``main`` parses and dispatches; each command is a module in
``commands``. Sits on top of every capability and the local runtime.
"""
