"""``python -m muse_mini`` is the ``muse-mini`` command."""

from muse_mini.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
