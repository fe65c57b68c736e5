"""The ``novakms`` command line (``novakms.cli.main:main``; ``python -m novakms.cli``)."""
