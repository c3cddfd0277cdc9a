"""Typer CLI: thin; options → configs → library calls. No logic of its own."""
