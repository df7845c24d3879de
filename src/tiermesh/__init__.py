"""tiermesh: an xDS control plane for hybrid local/cloud LLM inference."""

__version__ = "0.1.0"
