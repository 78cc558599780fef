"""liferaft: keep an application one tested command away from running somewhere else, with its data."""

__version__ = "0.1.0"

__all__ = ["__version__"]
