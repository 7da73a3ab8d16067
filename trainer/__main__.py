"""``python -m trainer`` (and ``torchrun ... -m trainer fit ...``)."""

from .cli import run

if __name__ == "__main__":
    run()
