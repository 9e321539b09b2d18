"""f1: collect simulated robot experience, train world models and explorers from it."""

__version__ = "0.1.0"
