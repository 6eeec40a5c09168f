"""Placeholder: see the issues."""
