"""Integration tests of the paid proxy served by uvicorn, with the official openai client."""
