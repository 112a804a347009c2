"""The remote execution service: runs sandboxes for a platform that holds no Docker socket.

A standalone HTTP server (``python -m execution_service``) in front of a local
``DockerBackend``. It needs neither Django settings nor the platform's database; the platform
talks to it through ``executions.backends.remote.RemoteBackend``.
"""

VERSION = "1"
