"""novakms: a distributed Key Management Service for TEE applications on the Nova platform."""

__version__ = "0.1.0"
