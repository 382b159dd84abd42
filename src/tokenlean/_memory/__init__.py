"""Context memory: transcripts, rolling summary, slots, and budgeted context packs."""
