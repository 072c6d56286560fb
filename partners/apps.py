from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save
from django.utils.translation import gettext_lazy as _


def _forget_api_key(instance, **kwargs):
    from partners.services import api_key_forget

    api_key_forget(instance.prefix)


class PartnersConfig(AppConfig):
    name = "partners"
    verbose_name = _("Partners")

    def ready(self):
        from partners.api import schema  # noqa: F401  (registers the Api-Key OpenAPI scheme)

        api_key = self.get_model("ApiKey")
        post_save.connect(_forget_api_key, sender=api_key)
        post_delete.connect(_forget_api_key, sender=api_key)
