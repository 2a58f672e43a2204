"""Scripted stand-ins for the outside world; the only one is the language model."""
