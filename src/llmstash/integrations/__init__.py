"""Hooks for user code that observes calls."""
