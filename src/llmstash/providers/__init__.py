"""Upstream providers: where a model name sends its request, and the HTTP that sends it."""
