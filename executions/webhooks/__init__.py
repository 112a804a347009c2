"""Signed webhooks sent when an execution ends: the one package that speaks HTTP to receivers.

Contract for receivers. Each delivery is ``POST callback_url`` with a JSON body (see
``payload``) and these headers:

``X-Evalplatform-Event``
    ``execution.ended``
``X-Evalplatform-Delivery``
    ``<execution id>-<attempt>``; a retry of the same event carries the same execution id.
``X-Evalplatform-Timestamp``
    Unix seconds when this attempt was signed.
``X-Evalplatform-Signature``
    ``sha256=<hex>``: HMAC-SHA256, keyed with the owner's webhook secret, over
    ``f"{timestamp}.{body}"`` (the raw body bytes). Check it with ``verify_signature``.

Any 2xx answer ends the delivery; anything else (or no answer within the timeout) is retried
with exponential backoff, ``EXECUTIONS["WEBHOOK_MAX_ATTEMPTS"]`` attempts in all. Every
attempt is recorded as a ``WebhookDelivery``. Only public addresses are reached, unless
allow-listed; the connection goes to the address that was checked (see ``transport``).

Modules: ``transport`` (the SSRF guard and the pinned connection), ``signing``, ``delivery``
(the payload, attempts and retries) and ``secrets`` (each user's signing secret). Callers
import from here. Nothing here imports the services; they call ``execution_ended``.
"""

from executions.webhooks.delivery import EVENT, backoff_s, deliver, execution_ended, payload
from executions.webhooks.secrets import webhook_secret_for, webhook_secret_rotate
from executions.webhooks.signing import (
    DEFAULT_TOLERANCE_S,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
    verify_signature,
)
from executions.webhooks.transport import (
    Refused,
    Response,
    Target,
    check_address,
    check_literal_host,
    literal_addresses,
    post,
    resolve_target,
)

__all__ = [
    "DEFAULT_TOLERANCE_S",
    "EVENT",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Refused",
    "Response",
    "Target",
    "backoff_s",
    "check_address",
    "check_literal_host",
    "deliver",
    "execution_ended",
    "literal_addresses",
    "payload",
    "post",
    "resolve_target",
    "sign",
    "verify_signature",
    "webhook_secret_for",
    "webhook_secret_rotate",
]
