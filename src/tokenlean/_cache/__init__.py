"""Caching: exact, semantic and retrieval caches over pluggable stores."""
