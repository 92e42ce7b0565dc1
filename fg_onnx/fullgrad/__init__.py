"""FullGrad: bias taps, implicit biases, in-graph aggregation and the augment pass."""
