"""routstr-core: a Routstr node."""
