"""genlab's applications: one file per use of a trained model (augment, anomaly, restore, interpolate,
embed). Each is a library function over a loaded model that returns values; it names the model
Protocol it needs (models/__init__.py) and takes a torch.Generator for its randomness. The commands in
cli/ are thin layers over these functions."""
