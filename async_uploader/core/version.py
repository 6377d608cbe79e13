"""This code's version: one literal, which the build reads too (``pyproject.toml``, ``tool.setuptools.dynamic``).

Read here, not from the installed distribution's metadata: that lookup walks every entry of ``sys.path`` (a
moment in a large environment, on every upload's receipt), and from a checkout on ``PYTHONPATH`` it names
whichever copy is installed, not the code that runs.
"""

VERSION = "0.1.0"
