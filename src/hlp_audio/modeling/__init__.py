"""Model files in transformers layout (configuration / modeling / feature extraction).

Nothing is imported here on purpose: ``hierarchy_ops`` is used by the numpy/torch core without
pulling in transformers, and the model files travel to the Hub as remote code.
"""
