"""Visible checks, one module per chapter (public: they ship to students)."""
