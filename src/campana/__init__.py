"""Campana: real-time in-app notifications with an exact unread badge."""

from __future__ import annotations

__version__ = "0.1.0"

from campana.app import create_app
from campana.schemas import NotificationItem, NotificationType
from campana.settings import Settings

__all__ = ["NotificationItem", "NotificationType", "Settings", "__version__", "create_app"]
