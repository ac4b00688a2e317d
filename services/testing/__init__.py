"""Test doubles for parts that cannot run on every machine (TF Serving)."""
