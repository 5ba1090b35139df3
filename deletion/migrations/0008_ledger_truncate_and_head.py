"""TRUNCATE is refused by privilege (REVOKE) rather than by trigger, so that a test database can
be flushed; the append function re-creates a missing head at genesis (a truncation of the head is
then visible to verify_ledger as a chain that does not match its anchors)."""

from django.db import migrations

FORWARD = r"""
DROP TRIGGER IF EXISTS ledger_no_truncate ON deletion_ledgerevent;
CREATE OR REPLACE FUNCTION ledger_append(payload text, ref uuid) RETURNS TABLE(seq bigint, hash bytea) AS $$
DECLARE
    head_seq bigint;
    head_hash bytea;
    new_hash bytea;
BEGIN
    INSERT INTO deletion_ledgerhead (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'))
        ON CONFLICT (id) DO NOTHING;
    SELECT h.seq, h.hash INTO head_seq, head_hash FROM deletion_ledgerhead h WHERE h.id = 1 FOR UPDATE;
    new_hash := sha256(head_hash || convert_to(payload, 'UTF8'));
    INSERT INTO deletion_ledgerevent (seq, prev_hash, hash, payload, request_ref, created_at)
        VALUES (head_seq + 1, head_hash, new_hash, payload, ref, now());
    UPDATE deletion_ledgerhead SET seq = head_seq + 1, hash = new_hash WHERE id = 1;
    RETURN QUERY SELECT head_seq + 1, new_hash;
END
$$ LANGUAGE plpgsql;
"""


class Migration(migrations.Migration):
    dependencies = [("deletion", "0007_ledger_append_request_ref")]
    operations = [migrations.RunSQL(FORWARD, migrations.RunSQL.noop)]
