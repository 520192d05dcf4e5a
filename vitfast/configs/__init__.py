"""Training recipes shipped with vitfast: python -m vitfast.train -c NAME."""
