"""Library of sparse-network-analysis: data, training, runs store, analysis, plots, CLI."""
