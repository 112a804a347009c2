"""The remote execution service: runs sandboxes for a platform that holds no Docker socket.

A standalone HTTP server (``python -m execution_service``) in front of the sandbox layer's
Docker runner. It builds on ``sandbox`` only, with no Django and none of the platform (an
import-linter contract holds this), and its image ships just those two packages; the platform
talks to it through ``executions.backends.remote.RemoteBackend``.
"""

VERSION = "2"
