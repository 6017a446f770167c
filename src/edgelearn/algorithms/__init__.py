"""Learning algorithms over the device / edge / cloud tree; each hands cohorts to the executor.

One folder per algorithm: ``<name>/algorithm.py`` (the class) and ``<name>/config.py`` (its pydantic
settings, loaded without torch); ``kit/`` holds what several algorithms share; ``base`` the interface and
``registry`` the name table. Importing this package imports none of them, so loading a config that names an
algorithm's settings stays light.
"""
