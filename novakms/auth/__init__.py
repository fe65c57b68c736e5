"""Pure authorization: registry model, policy, static registry, rate limiting."""
