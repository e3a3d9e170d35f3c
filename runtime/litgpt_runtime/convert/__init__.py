"""Hugging Face <-> our checkpoint format (weight maps per family, streaming conversion)."""
