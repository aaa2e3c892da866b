"""Unit tests of the Cashu adapter: crypto and codecs against the published NUT vectors."""
