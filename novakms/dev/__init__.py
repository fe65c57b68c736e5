"""Development only: the local anvil (:mod:`~novakms.dev.anvil`), the demo world on it
(:mod:`~novakms.dev.world`), dev keys (:mod:`~novakms.dev.env`), the node processes
(:mod:`~novakms.dev.nodes`) and the ``novakms dev`` supervisor (:mod:`~novakms.dev.cluster`)."""
