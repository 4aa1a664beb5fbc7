"""Worker processes cannot import the tests' helpers: their task functions go by value."""

import cloudpickle

from . import helpers

cloudpickle.register_pickle_by_value(helpers)
