"""Saving models for serving, and shared helpers."""
