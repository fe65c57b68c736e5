"""trio glue: listeners, dialers, framed encrypted streams, the Odyn signer."""
