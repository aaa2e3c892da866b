"""Port contract tests: one test set against the fake and the real adapter."""
