class ReadOnlyMixin:
    """Records the back office may look at, never add, edit or delete (the ledger is
    append-only; logs of changes and awards are written by the services alone)."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
