"""lowdiff: train many small DDPMs on 2-D data at once, measure them and compare them honestly."""

__version__ = "0.1.0"
