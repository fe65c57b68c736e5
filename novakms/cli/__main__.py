"""``python -m novakms.cli``: the ``novakms`` command."""

from novakms.cli.main import main

raise SystemExit(main())
