"""Shared pytest configuration for tiermesh's tests."""
