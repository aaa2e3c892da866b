"""HTTP edge tests on fakes."""
