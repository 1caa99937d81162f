"""WSGI entry point (gunicorn config.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_application = get_wsgi_application()

from config.chunked import ChunkedBodyMiddleware  # noqa: E402 - needs the settings module

# Chunked request bodies are read (or answered 411) before Django sees them: config/chunked.py.
application = ChunkedBodyMiddleware(django_application)
