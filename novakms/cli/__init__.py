"""The ``novakms`` command line (``novakms.cli.main:main``; ``python -m novakms.cli``).

:mod:`~novakms.cli.main` assembles the parser and maps errors to JSON and exit codes; one
module per subcommand adds its parser and runs it (:mod:`~novakms.cli.serve`,
:mod:`~novakms.cli.dev`, :mod:`~novakms.cli.client`, :mod:`~novakms.cli.admin`,
:mod:`~novakms.cli.guardian`, :mod:`~novakms.cli.bridge`); :mod:`~novakms.cli.common` holds
what they share, and :mod:`~novakms.cli.settings` (pure) merges a command's flags with the
environment and a TOML config file (``novakms serve --config``).
"""
