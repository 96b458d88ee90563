"""Example apps: copy one to start your own."""
