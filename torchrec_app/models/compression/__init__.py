"""Compressed tables: hashing and quotient-remainder / mixed-radix compositional embeddings."""
