"""The queues app's models. pgmq's own tables are unmanaged models defined in queues/pgmq.py."""
from queues.pgmq import Queue

__all__ = ["Queue"]
