"""Initial schema: every SPEC §5 table.

Revision ID: 0001
Revises: 
Create Date: 2026-11-27 08:35:03.325694
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('api_keys',
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('balance_msat', sa.BigInteger(), nullable=False),
    sa.Column('reserved_msat', sa.BigInteger(), nullable=False),
    sa.Column('total_spent_msat', sa.BigInteger(), nullable=False),
    sa.Column('total_requests', sa.BigInteger(), nullable=False),
    sa.Column('refund_address', sa.Text(), nullable=True),
    sa.Column('refund_mint_url', sa.String(length=512), nullable=True),
    sa.Column('refund_unit', sa.String(length=8), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('parent_key_hash', sa.String(length=64), nullable=True),
    sa.Column('balance_limit_msat', sa.BigInteger(), nullable=True),
    sa.Column('balance_limit_reset', sa.String(length=8), nullable=True),
    sa.Column('limit_used_msat', sa.BigInteger(), nullable=False),
    sa.Column('limit_reset_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("balance_limit_reset IS NULL OR balance_limit_reset IN ('daily', 'weekly', 'monthly')", name=op.f('ck_api_keys_balance_limit_reset')),
    sa.CheckConstraint('balance_limit_msat IS NULL OR balance_limit_msat >= 0', name=op.f('ck_api_keys_balance_limit_msat_nonneg')),
    sa.CheckConstraint('balance_msat >= 0', name=op.f('ck_api_keys_balance_msat_nonneg')),
    sa.CheckConstraint('limit_used_msat >= 0', name=op.f('ck_api_keys_limit_used_msat_nonneg')),
    sa.CheckConstraint('reserved_msat <= balance_msat', name=op.f('ck_api_keys_reserved_le_balance')),
    sa.CheckConstraint('reserved_msat >= 0', name=op.f('ck_api_keys_reserved_msat_nonneg')),
    sa.CheckConstraint('total_requests >= 0', name=op.f('ck_api_keys_total_requests_nonneg')),
    sa.CheckConstraint('total_spent_msat >= 0', name=op.f('ck_api_keys_total_spent_msat_nonneg')),
    sa.ForeignKeyConstraint(['parent_key_hash'], ['api_keys.key_hash'], name=op.f('fk_api_keys_parent_key_hash_api_keys')),
    sa.PrimaryKeyConstraint('key_hash', name=op.f('pk_api_keys'))
    )
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_keys_parent_key_hash'), ['parent_key_hash'], unique=False)

    op.create_table('cashu_proofs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('mint_url', sa.String(length=512), nullable=False),
    sa.Column('unit', sa.String(length=8), nullable=False),
    sa.Column('keyset_id', sa.String(length=66), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('secret', sa.String(length=255), nullable=False),
    sa.Column('c', sa.String(length=130), nullable=True),
    sa.Column('blinded_message', sa.String(length=130), nullable=False),
    sa.Column('blinding_factor', sa.String(length=130), nullable=False),
    sa.Column('dleq', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('op_id', sa.String(length=255), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("state IN ('issuing', 'unspent', 'reserved', 'spent', 'sent')", name=op.f('ck_cashu_proofs_state')),
    sa.CheckConstraint('amount >= 0', name=op.f('ck_cashu_proofs_amount_nonneg')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cashu_proofs')),
    sa.UniqueConstraint('secret', name=op.f('uq_cashu_proofs_secret'))
    )
    with op.batch_alter_table('cashu_proofs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cashu_proofs_mint_url_unit_state'), ['mint_url', 'unit', 'state'], unique=False)
        batch_op.create_index(batch_op.f('ix_cashu_proofs_op_id'), ['op_id'], unique=False)

    op.create_table('job_leases',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('holder', sa.String(length=128), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_job_leases'))
    )
    op.create_table('ledger_entries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=True),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('amount_msat', sa.BigInteger(), nullable=False),
    sa.Column('request_id', sa.String(length=64), nullable=True),
    sa.Column('idempotency_key', sa.String(length=255), nullable=False),
    sa.Column('mint_url', sa.String(length=512), nullable=True),
    sa.Column('unit', sa.String(length=8), nullable=True),
    sa.Column('meta', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_entries')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_ledger_entries_idempotency_key'))
    )
    with op.batch_alter_table('ledger_entries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ledger_entries_key_hash'), ['key_hash'], unique=False)
        batch_op.create_index(batch_op.f('ix_ledger_entries_kind'), ['kind'], unique=False)
        batch_op.create_index(batch_op.f('ix_ledger_entries_request_id'), ['request_id'], unique=False)

    op.create_table('lightning_invoices',
    sa.Column('id_hash', sa.String(length=64), nullable=False),
    sa.Column('purpose', sa.String(length=16), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=True),
    sa.Column('mint_url', sa.String(length=512), nullable=False),
    sa.Column('unit', sa.String(length=8), nullable=False),
    sa.Column('amount_sats', sa.BigInteger(), nullable=False),
    sa.Column('quote_id', sa.String(length=255), nullable=False),
    sa.Column('bolt11', sa.Text(), nullable=False),
    sa.Column('payment_hash', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('balance_limit_msat', sa.BigInteger(), nullable=True),
    sa.Column('balance_limit_reset', sa.String(length=8), nullable=True),
    sa.Column('key_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('paid_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('next_check_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("purpose IN ('create', 'topup')", name=op.f('ck_lightning_invoices_purpose')),
    sa.CheckConstraint("state IN ('pending', 'paid', 'expired', 'failed')", name=op.f('ck_lightning_invoices_state')),
    sa.CheckConstraint('amount_sats >= 0', name=op.f('ck_lightning_invoices_amount_sats_nonneg')),
    sa.CheckConstraint('balance_limit_msat IS NULL OR balance_limit_msat >= 0', name=op.f('ck_lightning_invoices_balance_limit_msat_nonneg')),
    sa.PrimaryKeyConstraint('id_hash', name=op.f('pk_lightning_invoices')),
    sa.UniqueConstraint('bolt11', name=op.f('uq_lightning_invoices_bolt11')),
    sa.UniqueConstraint('payment_hash', name=op.f('uq_lightning_invoices_payment_hash')),
    sa.UniqueConstraint('quote_id', name=op.f('uq_lightning_invoices_quote_id'))
    )
    with op.batch_alter_table('lightning_invoices', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lightning_invoices_state_next_check_at'), ['state', 'next_check_at'], unique=False)

    op.create_table('owner_payouts',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('mint_url', sa.String(length=512), nullable=False),
    sa.Column('unit', sa.String(length=8), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('fee', sa.BigInteger(), nullable=False),
    sa.Column('destination', sa.Text(), nullable=True),
    sa.Column('melt_quote_id', sa.String(length=255), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('payout', 'withdraw')", name=op.f('ck_owner_payouts_kind')),
    sa.CheckConstraint("state IN ('pending', 'issued', 'paid', 'failed', 'ambiguous')", name=op.f('ck_owner_payouts_state')),
    sa.CheckConstraint('amount >= 0', name=op.f('ck_owner_payouts_amount_nonneg')),
    sa.CheckConstraint('fee >= 0', name=op.f('ck_owner_payouts_fee_nonneg')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_owner_payouts'))
    )
    with op.batch_alter_table('owner_payouts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_owner_payouts_state'), ['state'], unique=False)

    op.create_table('redemptions',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('mint_url', sa.String(length=512), nullable=False),
    sa.Column('unit', sa.String(length=8), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('fee', sa.BigInteger(), nullable=False),
    sa.Column('credited_msat', sa.BigInteger(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('error_code', sa.String(length=64), nullable=True),
    sa.Column('input_ys', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('attempt_started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("state IN ('pending', 'credited', 'failed', 'aborted')", name=op.f('ck_redemptions_state')),
    sa.CheckConstraint('amount >= 0', name=op.f('ck_redemptions_amount_nonneg')),
    sa.CheckConstraint('credited_msat >= 0', name=op.f('ck_redemptions_credited_msat_nonneg')),
    sa.CheckConstraint('fee >= 0', name=op.f('ck_redemptions_fee_nonneg')),
    sa.PrimaryKeyConstraint('token_hash', name=op.f('pk_redemptions'))
    )
    with op.batch_alter_table('redemptions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_redemptions_key_hash'), ['key_hash'], unique=False)
        batch_op.create_index(batch_op.f('ix_redemptions_state_attempt_started_at'), ['state', 'attempt_started_at'], unique=False)

    op.create_table('refunds',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('request_id', sa.String(length=64), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('method', sa.String(length=16), nullable=False),
    sa.Column('mint_url', sa.String(length=512), nullable=False),
    sa.Column('unit', sa.String(length=8), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('fee', sa.BigInteger(), nullable=False),
    sa.Column('destination', sa.Text(), nullable=True),
    sa.Column('melt_quote_id', sa.String(length=255), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('collected_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('change', 'refund', 'expiry')", name=op.f('ck_refunds_kind')),
    sa.CheckConstraint("method IN ('token', 'lightning')", name=op.f('ck_refunds_method')),
    sa.CheckConstraint("state IN ('pending', 'issued', 'paid', 'failed', 'ambiguous')", name=op.f('ck_refunds_state')),
    sa.CheckConstraint('amount >= 0', name=op.f('ck_refunds_amount_nonneg')),
    sa.CheckConstraint('fee >= 0', name=op.f('ck_refunds_fee_nonneg')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_refunds'))
    )
    with op.batch_alter_table('refunds', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_refunds_key_hash'), ['key_hash'], unique=False)
        batch_op.create_index(batch_op.f('ix_refunds_request_id'), ['request_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_refunds_state_updated_at'), ['state', 'updated_at'], unique=False)

    op.create_table('reservations',
    sa.Column('request_id', sa.String(length=64), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('billing_key_hash', sa.String(length=64), nullable=False),
    sa.Column('amount_msat', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('model', sa.String(length=255), nullable=True),
    sa.Column('provider_id', sa.String(length=255), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('settled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('charged_msat', sa.BigInteger(), nullable=True),
    sa.CheckConstraint("status IN ('active', 'charged', 'released', 'expired')", name=op.f('ck_reservations_status')),
    sa.CheckConstraint('amount_msat >= 0', name=op.f('ck_reservations_amount_msat_nonneg')),
    sa.CheckConstraint('charged_msat IS NULL OR charged_msat >= 0', name=op.f('ck_reservations_charged_msat_nonneg')),
    sa.ForeignKeyConstraint(['billing_key_hash'], ['api_keys.key_hash'], name=op.f('fk_reservations_billing_key_hash_api_keys')),
    sa.ForeignKeyConstraint(['key_hash'], ['api_keys.key_hash'], name=op.f('fk_reservations_key_hash_api_keys')),
    sa.PrimaryKeyConstraint('request_id', name=op.f('pk_reservations'))
    )
    with op.batch_alter_table('reservations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reservations_billing_key_hash_status'), ['billing_key_hash', 'status'], unique=False)
        batch_op.create_index(batch_op.f('ix_reservations_status_lease_expires_at'), ['status', 'lease_expires_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('reservations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reservations_status_lease_expires_at'))
        batch_op.drop_index(batch_op.f('ix_reservations_billing_key_hash_status'))

    op.drop_table('reservations')
    with op.batch_alter_table('refunds', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_refunds_state_updated_at'))
        batch_op.drop_index(batch_op.f('ix_refunds_request_id'))
        batch_op.drop_index(batch_op.f('ix_refunds_key_hash'))

    op.drop_table('refunds')
    with op.batch_alter_table('redemptions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_redemptions_state_attempt_started_at'))
        batch_op.drop_index(batch_op.f('ix_redemptions_key_hash'))

    op.drop_table('redemptions')
    with op.batch_alter_table('owner_payouts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_owner_payouts_state'))

    op.drop_table('owner_payouts')
    with op.batch_alter_table('lightning_invoices', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_lightning_invoices_state_next_check_at'))

    op.drop_table('lightning_invoices')
    with op.batch_alter_table('ledger_entries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ledger_entries_request_id'))
        batch_op.drop_index(batch_op.f('ix_ledger_entries_kind'))
        batch_op.drop_index(batch_op.f('ix_ledger_entries_key_hash'))

    op.drop_table('ledger_entries')
    op.drop_table('job_leases')
    with op.batch_alter_table('cashu_proofs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cashu_proofs_op_id'))
        batch_op.drop_index(batch_op.f('ix_cashu_proofs_mint_url_unit_state'))

    op.drop_table('cashu_proofs')
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_keys_parent_key_hash'))

    op.drop_table('api_keys')
