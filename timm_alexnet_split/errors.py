"""The one error class a user can cause (bad path, unknown model, corrupt file...).

The command line turns it into one line on stderr and exit status 2, never a traceback.
"""


class UserError(Exception):
    """A problem with the user's input, with a message that says what to do."""
