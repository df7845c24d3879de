"""Things that stand in for parts of a real deployment in demos and tests."""
