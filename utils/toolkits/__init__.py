"""Seed toolkits matched to upstream APIs.

``graphs`` and ``layer_flow`` (deepstruct): networks as graphs; ``sparse`` (ActuallySparse):
real sparse layers and inference.
"""
