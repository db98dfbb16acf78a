""" Built-in features, each a plugin registered like any third-party one (zato.plugins.DEFAULT_PLUGINS). """
