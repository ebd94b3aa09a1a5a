"""A small SMS spam classifier: the kind of model a team gates with pytest-seqgate."""
