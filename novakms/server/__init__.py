"""The node's network front and the state it serves from (trio glue around the pure cores)."""
