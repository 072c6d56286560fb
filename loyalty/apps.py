from django.apps import AppConfig
from django.db import connections
from django.db.models.signals import post_delete, post_migrate, post_save
from django.utils.translation import gettext_lazy as _


def _schedules_setup(sender, using="default", **kwargs):
    """After every `migrate` (fresh install, deploy, test database): give each periodic
    job its default beat schedule if it has none (loyalty.jobs.schedules_setup)."""
    if "django_celery_beat_periodictask" not in connections[using].introspection.table_names():
        return  # beat's tables are not there (migrated backwards, or not yet)
    from loyalty import jobs

    jobs.schedules_setup(using=using)


def _forget_program_settings(**kwargs):
    from loyalty.ledger import program_settings_forget

    program_settings_forget()


class LoyaltyConfig(AppConfig):
    name = "loyalty"
    verbose_name = _("Loyalty program")

    def ready(self):
        from loyalty import (
            receivers,  # noqa: F401  (connects the subscriptions)
            request_memo,
        )
        from loyalty.ledger import settings_cache_key
        from loyalty.rules.loader import GENERATION_KEY

        # What a purchase reads from the shared cache besides its key and rate limit. The
        # settings are decoded once per process while they stay the same (2 % of a till's
        # purchase, callgrind): requests only read them; a change re-caches new bytes.
        request_memo.read_together(GENERATION_KEY)
        request_memo.read_together(settings_cache_key(), shared=True)

        post_migrate.connect(_schedules_setup, sender=self)
        settings_model = self.get_model("ProgramSettings")
        post_save.connect(_forget_program_settings, sender=settings_model)
        post_delete.connect(_forget_program_settings, sender=settings_model)
