"""``python -m trainer`` (and ``torchrun ... -m trainer fit ...``)."""

from .cli import main

if __name__ == "__main__":
    main()
