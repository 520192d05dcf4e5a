"""Training machinery behind python -m vitfast.train and vitfast.eval."""
