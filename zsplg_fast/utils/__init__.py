"""Small shared helpers (atomic file IO, hashing, environment)."""
