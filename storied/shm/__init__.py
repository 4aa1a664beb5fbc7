"""Same host, no copy: large results handed between processes of one host through
``/dev/shm`` (see ``docs/wire.md``)."""
