"""The ``unbroken`` command line: the top of the project, over every other package."""
