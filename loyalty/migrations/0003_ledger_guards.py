"""Let PostgreSQL itself enforce two ledger rules that no CHECK constraint can express:
entries and postings are append-only, and each entry's postings sum to zero (checked
at commit, so a service may insert an entry's postings one by one)."""

from django.db import migrations

FORWARD = """
CREATE FUNCTION tally_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'ledger rows are append-only: % on % refused', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'integrity_constraint_violation';
END $$;

CREATE TRIGGER journalentry_append_only BEFORE UPDATE OR DELETE ON loyalty_journalentry
  FOR EACH ROW EXECUTE FUNCTION tally_refuse_change();
CREATE TRIGGER posting_append_only BEFORE UPDATE OR DELETE ON loyalty_posting
  FOR EACH ROW EXECUTE FUNCTION tally_refuse_change();

CREATE FUNCTION tally_check_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE total bigint;
BEGIN
  SELECT COALESCE(SUM(amount), 0) INTO total FROM loyalty_posting WHERE entry_id = NEW.entry_id;
  IF total <> 0 THEN
    RAISE EXCEPTION 'postings of ledger entry % sum to %, not zero', NEW.entry_id, total
      USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER posting_entry_balanced AFTER INSERT ON loyalty_posting
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION tally_check_entry_balanced();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS posting_entry_balanced ON loyalty_posting;
DROP TRIGGER IF EXISTS posting_append_only ON loyalty_posting;
DROP TRIGGER IF EXISTS journalentry_append_only ON loyalty_journalentry;
DROP FUNCTION IF EXISTS tally_check_entry_balanced();
DROP FUNCTION IF EXISTS tally_refuse_change();
"""


def _on_postgres(sql):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            with schema_editor.connection.cursor() as cursor:
                cursor.execute(sql)  # no params: the % in RAISE are PL/pgSQL's own

    return run


class Migration(migrations.Migration):
    dependencies = [("loyalty", "0002_initial")]
    operations = [migrations.RunPython(_on_postgres(FORWARD), _on_postgres(BACKWARD))]
