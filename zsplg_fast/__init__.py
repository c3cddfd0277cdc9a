"""zsplg-fast: zero-shot pseudo labels from SAM x CLIP, UniMatch enhanced labels, fast deployable engines."""

__version__ = "0.1.0"
