"""Shared pytest configuration for tiermesh's tests."""

pytest_plugins = ("tests.support.llama_fixtures",)
