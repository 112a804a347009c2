"""The sandbox layer: what running untrusted code needs, with no Django and no platform in it.

The contract (``contract``: request, result, error kinds, health), the hardening every backend
renders (``policy``), the Docker runner (``docker``), the execution service's wire format
(``wire``) and request signing (``signing``). The platform's backends and the execution
service both build on it; it imports neither (import-linter holds this, see pyproject.toml).
"""
