"""Guides: generic builders (auto.py, mixture.py) and hand-written ones per model (gmm.py, coin.py,
multimodal.py). Every builder is called as `builder(model, init_values)` and returns a guide."""
