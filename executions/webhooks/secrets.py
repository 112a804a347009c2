"""Each user's webhook signing secret: created on first use, rotated on request."""

from __future__ import annotations

import secrets

from django.contrib.auth.models import User

from executions.models import WebhookSecret


def webhook_secret_for(user: User) -> str:
    """The user's webhook signing secret, created on first use."""
    found, _ = WebhookSecret.objects.get_or_create(
        user=user, defaults={"secret": secrets.token_urlsafe(32)}
    )
    return found.secret


def webhook_secret_rotate(user: User) -> str:
    """Replace the user's webhook secret with a new one and return it; the old one stops
    verifying at once."""
    secret = secrets.token_urlsafe(32)
    WebhookSecret.objects.update_or_create(user=user, defaults={"secret": secret})
    return secret
