import os
import uuid

from .base import *  # noqa: F403

DEBUG = False
SECRET_KEY = "test-only-secret"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
CELERY_TASK_ALWAYS_EAGER = True
LANGUAGE_CODE = "en"

# Each test run keeps its own keys in a shared Redis, so nothing a run leaves there
# (allauth's rate limits, say) changes the next one; processes the tests start (a Celery
# worker) inherit the prefix. tests/conftest.py removes the keys when the run ends.
if REDIS_URL:  # noqa: F405
    os.environ.setdefault("TALLY_TEST_CACHE_PREFIX", f"test-{uuid.uuid4().hex[:12]}")
    CACHES["default"]["KEY_PREFIX"] = os.environ["TALLY_TEST_CACHE_PREFIX"]  # noqa: F405
