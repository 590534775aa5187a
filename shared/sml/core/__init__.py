"""The core every capability uses: the event contract (``events``), settings (``settings``), errors
(``errors``), the AWS client factory (``aws``) and the database (``db``: engine, tables, migrations).

The core imports no capability package; each capability imports only what it needs from here.
"""
