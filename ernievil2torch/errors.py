"""The project's own error types: every bad checkpoint or input ends in one of these, with a specific message."""


class ErnieViL2Error(Exception):
    """Base class: a problem with the user's input that the project detected and explained."""


class CheckpointError(ErnieViL2Error, ValueError):
    """A checkpoint that cannot be read safely or does not hold the expected model."""


class UnsafePickleError(CheckpointError):
    """A pickle asked for a global outside the allow-list; nothing from it was executed."""


class KeyMapError(CheckpointError):
    """A state dict whose keys or shapes do not match the layout it was detected as."""


class InputError(ErnieViL2Error, ValueError):
    """An image or text the front ends cannot turn into model input."""


class OutputExistsError(ErnieViL2Error, FileExistsError):
    """The output already exists and the command was not told to replace it (``--overwrite``)."""


class ImageTooLargeError(InputError):
    """An image with more pixels than allowed (a caller's limit or Pillow's decompression-bomb guard)."""


class DiskSpaceError(ErnieViL2Error, OSError):
    """Not enough free disk space to write an output completely; nothing was written and earlier outputs stand."""
