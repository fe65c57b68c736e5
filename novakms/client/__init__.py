"""Clients for apps: :mod:`novakms.client.aio` (trio) and :mod:`novakms.client.blocking`."""
