"""Pure cryptography: key derivation, EIP-191 signatures, the Signer interface."""
