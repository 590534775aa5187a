"""Local runtime: the AWS pieces a Lambda needs around it, on 127.0.0.1.

- :mod:`sml.local.function_url`: an HTTP server that turns requests into Function URL events.
- :mod:`sml.local.poller`: an SQS poller that calls a handler like Lambda's event source mapping.
- :mod:`sml.local.stack`: the local AWS endpoint, queues, bucket and topic, and both of the above.
"""
