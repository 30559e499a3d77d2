"""lowcap-learning: the learning engine of a lowcap trading bot, built inside PostgreSQL."""

__version__ = "0.1.0"
