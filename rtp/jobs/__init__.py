"""The jobs that ``rtp`` chains: ``train`` runs the backfill for its history, then
``models.train``; ``evaluate`` runs ``models.evaluation`` with ``train`` as the
trainer of its two-tower variants. Below ``rtp``, no job starts another."""
