"""One module per paper experiment: python -m experiments.<name>."""
