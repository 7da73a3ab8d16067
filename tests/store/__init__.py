"""Tests of ccfkit.store, one module per module of the package."""
