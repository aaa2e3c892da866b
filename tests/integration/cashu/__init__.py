"""Integration tests of the Cashu adapter against real nutshell mints and a scripted loopback server."""
