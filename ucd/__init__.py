"""ucd: user-centric LLM distillation for sequential recommenders, on Ray."""

__version__ = "0.1.0"
