"""Low-rank factorization techniques."""
