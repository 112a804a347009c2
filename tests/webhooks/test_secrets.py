"""Each user's webhook signing secret: random, made on first use, kept, replaced on rotation."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User

from executions import webhooks
from executions.models import WebhookSecret

pytestmark = pytest.mark.django_db


def test_a_secret_is_made_on_first_use_and_kept(user: User) -> None:
    assert not WebhookSecret.objects.filter(user=user).exists()
    secret = webhooks.webhook_secret_for(user)
    # token_urlsafe(32): 43 characters from 256 random bits.
    assert len(secret) >= 43 and secret.replace("-", "").replace("_", "").isalnum()
    assert webhooks.webhook_secret_for(user) == secret
    assert WebhookSecret.objects.get(user=user).secret == secret


def test_each_user_has_a_secret_of_their_own(user: User, django_user_model: Any) -> None:
    other = django_user_model.objects.create_user("other-signer", password="x" * 12)
    assert webhooks.webhook_secret_for(user) != webhooks.webhook_secret_for(other)


def test_rotation_replaces_the_secret_at_once(user: User) -> None:
    first = webhooks.webhook_secret_for(user)
    second = webhooks.webhook_secret_rotate(user)
    assert second != first and len(second) >= 43
    assert webhooks.webhook_secret_for(user) == second
