"""Engine: datasets, the training loop (one run or K runs batched), seeding."""
