"""refusalkit: find, choose, use and audit refusal directions in language models."""

__version__ = "0.1.0"
