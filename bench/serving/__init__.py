"""Lookup serving under load: our server against the Flask floor, side by side."""
