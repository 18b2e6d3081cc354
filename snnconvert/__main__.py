"""``python -m snnconvert …`` (and ``torchrun … -m snnconvert …``): the ``snnconvert`` command."""
from snnconvert.cli import entry

entry()
