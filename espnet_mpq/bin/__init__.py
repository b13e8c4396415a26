"""Command-line entry points of espnet_mpq."""
