"""Importers of other systems' config files into vitfast's options: VISSL's YAML (vissl.py) and myrtle-vision's JSON
(myrtle.py)."""
