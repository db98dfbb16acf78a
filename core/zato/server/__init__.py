""" The server: one process, or a supervisor with N trio worker processes. """
