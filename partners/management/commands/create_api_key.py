from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from partners.models import Scope, Store, Terminal
from partners.services import InvalidScopes, api_key_create, scopes_clean


class Command(BaseCommand):
    help = "Issue an API key for a store's terminal. The key is printed once, on the last line."

    def add_arguments(self, parser):
        parser.add_argument("--store", required=True, help="store code")
        parser.add_argument("--name", required=True, help="key name, e.g. 'Till 3'")
        parser.add_argument("--terminal", help="terminal name (default: the key name; made if new)")
        parser.add_argument(
            "--scopes", nargs="*", metavar="SCOPE",
            help=f"default: all of {' '.join(Scope.values)}",
        )  # fmt: skip

    def handle(self, *args, store, name, terminal, scopes, **options):
        try:
            store_obj = Store.objects.get(code=store)
        except Store.DoesNotExist:
            raise CommandError(f"No store with code {store!r}.") from None
        try:
            scopes = scopes_clean(scopes)  # before anything is written
        except InvalidScopes as exc:
            raise CommandError(str(exc)) from None
        with transaction.atomic():
            terminal_obj, _ = Terminal.objects.get_or_create(store=store_obj, name=terminal or name)
            api_key, full_key = api_key_create(terminal=terminal_obj, name=name, scopes=scopes)
        self.stderr.write(
            f"Key {api_key.prefix} for {terminal_obj} with scopes: {' '.join(api_key.scopes)}"
        )
        self.stderr.write("Store it now: it is not shown again.")
        self.stdout.write(full_key)
