"""Builders of input objects made inside the student's kernel, per chapter (public)."""
