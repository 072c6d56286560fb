from django.utils.functional import SimpleLazyObject

from loyalty.ledger import program_settings


def program(request):
    """The program's name and currency for the layout; queried only if a page uses it."""
    return {"program": SimpleLazyObject(program_settings)}
