"""The operations by family, and :mod:`.dispatch`: the table of who may call each and the one
dispatcher. Handlers take an :class:`~novakms.server.ops.context.OpContext` and never see a
stream, a clock or the node (this ``__init__`` imports nothing, so the families and the table
import each other without a cycle through the package)."""
