"""Notifications: Slack-compatible incoming-webhook messages and email about releases and
experiments, per project (channels) and per person (preferences). The entry is
``notifications.services.notify``."""
