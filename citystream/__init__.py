"""citystream kernel: the message model, codec, settings, topic names, logging and errors.

Every stage imports this package; it imports no stage.
"""

__version__ = "0.1.0"
