"""Pure storage: the per-app KV store, its records, clocks and merge — `now` is always passed in."""
