"""espnet_mpq."""
